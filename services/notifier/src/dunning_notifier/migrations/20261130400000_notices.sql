-- migrate:up
-- Consolidated notices (NoticeComposed, dunning.stages.v1, keyed by customer): one delivery per
-- notice, sent once, with the same state machine as `deliveries` (pending -> sending -> sent | failed,
-- or cancelled), leased and fenced by `attempts` the same way (notices.py, notice_repository.py).
CREATE TABLE notices (
    notice_id             text PRIMARY KEY,                -- ntc_...: one row per notice, never two
    delivery_id           text        NOT NULL UNIQUE,     -- dlv_...: the Message-ID's local part, and the
                                                           -- delivery_id of its stages' Reminder* events
    tenant_id             text        NOT NULL,
    customer_id           text        NOT NULL,
    channel               text        NOT NULL,
    composed_at           timestamptz NOT NULL,            -- when the scheduler composed it
    recipient             text,
    cc                    text[]      NOT NULL DEFAULT '{}',
    state                 text        NOT NULL DEFAULT 'pending'
                          CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'cancelled')),
    attempts              integer     NOT NULL DEFAULT 0,  -- claims so far; the claim's fencing token
    in_doubt_attempts     integer     NOT NULL DEFAULT 0,
    next_attempt_at       timestamptz NOT NULL DEFAULT now(),
    claimed_until         timestamptz,
    provider_message_id   text,
    last_error_code       text,
    last_error            text,
    payload               jsonb       NOT NULL,            -- the NoticeComposed data, as received
    source_event_id       uuid        NOT NULL,
    traceparent           text,
    invoice_ids           text[],                          -- sent: the invoices the notice listed
    left_out              text[],                          -- sent: its invoices stopped before it went
    cancel_reason         text,                            -- no stage item left: the last stop's reason
    cancel_cause_event_id uuid,
    cancelled_at          timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    sent_at               timestamptz,
    -- As for deliveries: a notice with no stage item left never waits for an attempt.
    CONSTRAINT notices_stopped_never_pending CHECK (state <> 'pending' OR cancel_reason IS NULL)
);
CREATE INDEX notices_due ON notices (next_attempt_at) WHERE state = 'pending';
CREATE INDEX notices_leased ON notices (claimed_until) WHERE state = 'sending';

-- The notice's items in order. A stop of an invoice (StagesCancelled; DunningPaused applied after the
-- notice was composed) marks its items while the notice is not sent: every attempt from then on
-- leaves them out. `outcome`: the one Reminder* event published for a stage item.
CREATE TABLE notice_items (
    notice_id            text        NOT NULL REFERENCES notices ON DELETE CASCADE,
    position             integer     NOT NULL,
    tenant_id            text        NOT NULL,
    invoice_id           text        NOT NULL,
    stage_id             text,                             -- null: listed as overdue, no stage of its own
    stage                text,
    sequence             integer,
    stop_reason          text,                             -- left out: the stop that found it unsent
    stop_cause_event_id  uuid,
    stopped_at           timestamptz,
    outcome              text CHECK (outcome IN ('sent', 'failed', 'cancelled')),
    outcome_at           timestamptz,
    PRIMARY KEY (notice_id, position)
);
CREATE INDEX notice_items_invoice ON notice_items (tenant_id, invoice_id);

-- migrate:down
DROP TABLE notice_items;
DROP TABLE notices;
