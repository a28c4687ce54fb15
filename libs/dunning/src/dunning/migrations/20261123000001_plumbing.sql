-- migrate:up
-- Plumbing shared by every service; each service's schema gets its own copy.

-- Transactional outbox: rows are written in the transaction that changes state; the relay
-- publishes them to Kafka and deletes them. `lane` = hash(key) mod 16: a relay holds a lane's
-- advisory lock while it publishes, so one key's events leave in order even with several relays.
CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    lane        smallint    NOT NULL,
    topic       text        NOT NULL,
    key         text        NOT NULL,
    event_id    uuid        NOT NULL,
    event_type  text        NOT NULL,
    headers     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    payload     bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_lane_id ON outbox (lane, id);

-- Inbox: one row per consumed event id, inserted in the transaction that applies the event.
CREATE TABLE inbox (
    event_id    uuid PRIMARY KEY,
    event_type  text        NOT NULL,
    topic       text        NOT NULL,
    status      text        NOT NULL DEFAULT 'processed',  -- processed | dead_lettered
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inbox_received_at ON inbox (received_at);

CREATE TABLE tenants (
    id          text PRIMARY KEY,
    name        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- API keys are stored as SHA-256 of a 256-bit random key: the key itself is shown once.
CREATE TABLE api_keys (
    key_hash    bytea PRIMARY KEY,
    tenant_id   text        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    prefix      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

-- migrate:down
DROP TABLE api_keys;
DROP TABLE tenants;
DROP TABLE inbox;
DROP TABLE outbox;
