-- migrate:up
-- More processors (issue 11): webhook secrets per tenant AND processor (stripe, gocardless,
-- standard_webhooks), each with an id for the rotation API; the events of GoCardless and Standard
-- Webhooks seen (a replay is a no-op); the GoCardless payments known from their events' metadata.

ALTER TABLE webhook_secrets ADD COLUMN processor text NOT NULL DEFAULT 'stripe'
    CHECK (processor IN ('stripe', 'gocardless', 'standard_webhooks'));
-- The rotation API's handle (whs_...); rows written without one (the admin CLI) get one here.
ALTER TABLE webhook_secrets ADD COLUMN secret_id text NOT NULL
    DEFAULT 'whs_' || upper(replace(gen_random_uuid()::text, '-', ''));
ALTER TABLE webhook_secrets ADD CONSTRAINT webhook_secrets_secret_id UNIQUE (secret_id);
ALTER TABLE webhook_secrets DROP CONSTRAINT webhook_secrets_pkey;
ALTER TABLE webhook_secrets ADD PRIMARY KEY (tenant_id, processor, secret);
-- A secret string belongs to one processor of a tenant (also the conflict target of the admin CLI's
-- upsert, repository.add_webhook_secret).
ALTER TABLE webhook_secrets ADD CONSTRAINT webhook_secrets_tenant_secret UNIQUE (tenant_id, secret);
CREATE INDEX webhook_secrets_active ON webhook_secrets (tenant_id, processor) WHERE revoked_at IS NULL;

-- Events of GoCardless (EV...) and Standard Webhooks (webhook-id), inserted in the transaction that
-- acts on them: a replay (a retry, or a captured request sent again) changes nothing.
CREATE TABLE processor_events (
    tenant_id    text        NOT NULL,
    processor    text        NOT NULL CHECK (processor IN ('gocardless', 'standard_webhooks')),
    event_id     text        NOT NULL,
    type         text        NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    outcome      text,
    payment_id   text,
    PRIMARY KEY (tenant_id, processor, event_id)
);

-- A GoCardless payment (PM...) as its events describe it: GoCardless events carry no amount, so the
-- merchant sets invoice_id / invoice_external_id, amount (minor units) and currency in the payment's
-- metadata, which GoCardless copies into each event's resource_metadata (docs/processors.md).
CREATE TABLE gocardless_payments (
    tenant_id            text        NOT NULL,
    gocardless_id        text        NOT NULL,
    invoice_id           text,
    invoice_external_id  text,
    currency             text        NOT NULL,
    amount               numeric     NOT NULL,
    -- the last payment action applied: submitted, confirmed, paid_out, failed, cancelled, ...
    status               text        NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, gocardless_id)
);

-- migrate:down
DROP TABLE gocardless_payments;
DROP TABLE processor_events;
DELETE FROM webhook_secrets WHERE processor <> 'stripe';
DROP INDEX webhook_secrets_active;
ALTER TABLE webhook_secrets DROP CONSTRAINT webhook_secrets_tenant_secret;
ALTER TABLE webhook_secrets DROP CONSTRAINT webhook_secrets_pkey;
ALTER TABLE webhook_secrets ADD PRIMARY KEY (tenant_id, secret);
ALTER TABLE webhook_secrets DROP CONSTRAINT webhook_secrets_secret_id;
ALTER TABLE webhook_secrets DROP COLUMN secret_id;
ALTER TABLE webhook_secrets DROP COLUMN processor;
