-- migrate:up
-- Outbound webhooks (webhooks*.py; docs/webhooks.md): a tenant's endpoints, one message per
-- (internal event, matching endpoint), and every attempt to deliver one.
CREATE TABLE webhook_endpoints (
    endpoint_id          text        PRIMARY KEY,
    tenant_id            text        NOT NULL,
    url                  text        NOT NULL,
    description          text        NOT NULL DEFAULT '',
    event_types          text[]      NOT NULL,
    enabled              boolean     NOT NULL DEFAULT true,
    disabled_reason      text,
    disabled_at          timestamptz,
    secret               text        NOT NULL,                -- whsec_<base64>: signs every message
    previous_secret      text,                                -- still signs until previous_expires_at
    previous_expires_at  timestamptz,
    consecutive_failures integer     NOT NULL DEFAULT 0,      -- messages that failed for good in a row
    failing_since        timestamptz,                         -- first failed attempt since the last 2xx
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, endpoint_id);

CREATE TABLE webhook_messages (
    message_id       text        PRIMARY KEY,                 -- the `webhook-id` header, every attempt
    tenant_id        text        NOT NULL,
    endpoint_id      text        NOT NULL REFERENCES webhook_endpoints ON DELETE CASCADE,
    event_type       text        NOT NULL,                    -- the public name (webhooks_catalogue.py)
    source_event_id  uuid        NOT NULL,                    -- the internal event it came from
    body             text        NOT NULL,                    -- {"type", "timestamp", "data"}: the bytes signed
    state            text        NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'sending', 'delivered', 'failed')),
    attempts         integer     NOT NULL DEFAULT 0,          -- attempts claimed in all (fencing token)
    budget_from      integer     NOT NULL DEFAULT 0,          -- `attempts` at the last replay
    next_trigger     text        NOT NULL DEFAULT 'scheduled', -- 'replay' once replayed, until claimed
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_until      timestamptz,
    last_status_code integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    UNIQUE (endpoint_id, source_event_id)                     -- one message per event and endpoint
);
CREATE INDEX webhook_messages_due ON webhook_messages (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_messages_tenant ON webhook_messages (tenant_id, message_id DESC);

CREATE TABLE webhook_attempts (
    attempt_id        text        PRIMARY KEY,
    tenant_id         text        NOT NULL,
    endpoint_id       text        NOT NULL REFERENCES webhook_endpoints ON DELETE CASCADE,
    message_id        text        REFERENCES webhook_messages ON DELETE CASCADE,
    delivery_id       text,                                   -- a `webhook` channel reminder's attempt
    trigger           text        NOT NULL CHECK (trigger IN ('scheduled', 'replay', 'reminder')),
    attempted_at      timestamptz NOT NULL,
    status_code       integer,                                -- null: no answer (network error, timeout)
    response_snippet  text,
    duration_ms       integer     NOT NULL,
    error             text
);
CREATE INDEX webhook_attempts_endpoint ON webhook_attempts (endpoint_id, attempt_id DESC);

-- migrate:down
DROP TABLE webhook_attempts;
DROP TABLE webhook_messages;
DROP TABLE webhook_endpoints;
