-- migrate:up
-- One row per (invoice, stage, channel) the notifier must deliver. The consumer inserts it (never
-- twice: the unique key below plus ON CONFLICT DO NOTHING); the dispatcher claims it with a lease,
-- sends it and records the outcome (ReminderSent / ReminderFailed go through the outbox).
CREATE TABLE deliveries (
    delivery_id          text PRIMARY KEY,                -- dlv_<ulid>; also the Message-ID's local part
    tenant_id            text        NOT NULL,
    invoice_id           text        NOT NULL,
    stage_id             text        NOT NULL,
    stage                text        NOT NULL,
    channel              text        NOT NULL,
    template             text        NOT NULL,
    recipient            text,                            -- null where the channel has no address yet
    state                text        NOT NULL DEFAULT 'pending'
                         CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
    attempts             integer     NOT NULL DEFAULT 0,  -- claims so far; also the claim's fencing token
    next_attempt_at      timestamptz NOT NULL DEFAULT now(),
    claimed_until        timestamptz,                     -- the lease while state = 'sending'
    provider_message_id  text,
    last_error_code      text,
    last_error           text,
    payload              jsonb       NOT NULL,            -- the StageEscalated data, as received
    source_event_id      uuid        NOT NULL,
    traceparent          text,                            -- the StageEscalated's trace, continued by the send
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    sent_at              timestamptz,
    CONSTRAINT deliveries_once UNIQUE (tenant_id, invoice_id, stage, channel)
);
-- The dispatcher's two scans: due pending rows, and leases that ran out.
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_leased ON deliveries (claimed_until) WHERE state = 'sending';
-- Support lookups: per invoice the unique key serves; a tenant's whole list, newest first.
CREATE INDEX deliveries_tenant_recent ON deliveries (tenant_id, delivery_id DESC);

-- migrate:down
DROP TABLE deliveries;
