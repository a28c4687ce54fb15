-- migrate:up
-- Reconciliation: the invoices it matches payments against, the payments it received (Stripe
-- webhooks and the accounting API), the Stripe events it has seen, and each tenant's webhook
-- signing secrets.

-- Invoices as announced by InvoiceIssued; `balance` is what is still owed.
CREATE TABLE invoices (
    invoice_id   text PRIMARY KEY,
    tenant_id    text        NOT NULL,
    external_id  text        NOT NULL,
    number       text        NOT NULL,
    currency     text        NOT NULL,
    amount_due   numeric     NOT NULL,
    balance      numeric     NOT NULL,
    metadata     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status       text        NOT NULL CHECK (status IN ('open', 'paid')),
    issued_at    timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX invoices_tenant_external_id ON invoices (tenant_id, external_id);
CREATE INDEX invoices_tenant_number ON invoices (tenant_id, number);

-- Every payment received. `invoice_id` is null while the payment waits for its invoice
-- (status 'unmatched'); the match_* columns keep the keys it will be matched on.
CREATE TABLE payments (
    payment_id         text PRIMARY KEY,
    tenant_id          text        NOT NULL,
    invoice_id         text        REFERENCES invoices (invoice_id),
    source             text        NOT NULL CHECK (source IN ('stripe', 'api')),
    -- Stripe event id, or the accounting system's payment reference.
    source_reference   text        NOT NULL,
    -- The Stripe object that carried the money (in_..., pi_...): one payment per object.
    stripe_object_id   text,
    status             text        NOT NULL CHECK (status IN ('applied', 'unmatched', 'rejected_currency_mismatch')),
    currency           text        NOT NULL,
    amount             numeric     NOT NULL,
    amount_applied     numeric     NOT NULL DEFAULT 0,
    unapplied_amount   numeric     NOT NULL DEFAULT 0,
    balance_remaining  numeric,
    settled            boolean     NOT NULL DEFAULT false,
    match_invoice_id   text,
    match_external_ids text[]      NOT NULL DEFAULT '{}',
    match_numbers      text[]      NOT NULL DEFAULT '{}',
    -- API payments: a digest of the request (idempotency) and the first answer given.
    fingerprint        text,
    response           jsonb,
    received_at        timestamptz NOT NULL,
    acknowledged_at    timestamptz NOT NULL,
    applied_at         timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, source, source_reference)
);
CREATE UNIQUE INDEX payments_stripe_object ON payments (tenant_id, stripe_object_id)
    WHERE stripe_object_id IS NOT NULL;
CREATE INDEX payments_tenant_invoice ON payments (tenant_id, invoice_id, payment_id);
CREATE INDEX payments_tenant_id ON payments (tenant_id, payment_id);
CREATE INDEX payments_unmatched ON payments (tenant_id) WHERE status = 'unmatched';

-- Stripe events seen, inserted in the transaction that acts on them: a replay is a no-op.
CREATE TABLE stripe_events (
    tenant_id    text        NOT NULL,
    event_id     text        NOT NULL,
    type         text        NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    outcome      text,
    payment_id   text,
    PRIMARY KEY (tenant_id, event_id)
);

-- Webhook endpoint secrets (whsec_...). Several may be active at once while a secret rotates.
-- Stored as given: verifying an HMAC needs the secret itself.
CREATE TABLE webhook_secrets (
    tenant_id    text        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    secret       text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    PRIMARY KEY (tenant_id, secret)
);

-- migrate:down
DROP TABLE webhook_secrets;
DROP TABLE stripe_events;
DROP TABLE payments;
DROP TABLE invoices;
