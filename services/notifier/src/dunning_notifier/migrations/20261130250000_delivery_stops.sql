-- migrate:up
-- The last mile of the cancel guarantee (handlers.py says where the boundary lies). The scheduler tells the notifier every stop of
-- an invoice (StagesCancelled: a terminal stop; DunningPaused: a pause, until DunningResumed); the
-- consumer applies it here, in the transaction that records the event:
-- * `invoice_stops` remembers it per invoice: a terminal stop for good, so that a StageEscalated
--   arriving after it (a redelivery or a re-emission) records its delivery already `cancelled`; a
--   pause until DunningResumed deletes it (what the scheduler fires under a pause is meant to go).
-- * every `pending` delivery of the invoice becomes `cancelled` (with the stop's reason and event),
--   and every `sending` one (mid-attempt: it finishes) is marked with the stop, so that no write
--   can put it back to `pending`: a transient failure, an expired lease or a hand-back at shutdown
--   makes it `cancelled` instead (the same statements, reading the row they update).
CREATE TABLE invoice_stops (
    tenant_id        text        NOT NULL,
    invoice_id       text        NOT NULL,
    state            text        NOT NULL CHECK (state IN ('stopped', 'paused')),
    reason           text        NOT NULL,  -- StagesCancelled.reason, or DunningPaused.cause
    cause_event_id   uuid        NOT NULL,  -- the StagesCancelled or DunningPaused applied
    stopped_at       timestamptz NOT NULL,  -- when the scheduler applied it (cancelled_at / paused_at)
    applied_at       timestamptz NOT NULL DEFAULT now(),  -- when the notifier applied it
    PRIMARY KEY (tenant_id, invoice_id)
);

ALTER TABLE deliveries
    ADD COLUMN cancel_reason text,           -- the stop that cancelled it, or found it mid-attempt
    ADD COLUMN cancel_cause_event_id uuid,   -- that stop's StagesCancelled or DunningPaused
    ADD COLUMN cancelled_at timestamptz;     -- when it became `cancelled`
ALTER TABLE deliveries DROP CONSTRAINT deliveries_state_check;
ALTER TABLE deliveries
    ADD CONSTRAINT deliveries_state_check
        CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'cancelled')),
    -- The invariant every write keeps: a delivery of a stopped invoice never waits for an attempt.
    ADD CONSTRAINT deliveries_stopped_never_pending CHECK (state <> 'pending' OR cancel_reason IS NULL);

-- migrate:down
ALTER TABLE deliveries DROP CONSTRAINT deliveries_stopped_never_pending;
UPDATE deliveries SET state = 'failed', last_error_code = 'cancelled', last_error = cancel_reason
 WHERE state = 'cancelled';
ALTER TABLE deliveries DROP CONSTRAINT deliveries_state_check;
ALTER TABLE deliveries
    ADD CONSTRAINT deliveries_state_check CHECK (state IN ('pending', 'sending', 'sent', 'failed'));
ALTER TABLE deliveries DROP COLUMN cancelled_at, DROP COLUMN cancel_cause_event_id, DROP COLUMN cancel_reason;
DROP TABLE invoice_stops;
