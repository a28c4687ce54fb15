-- migrate:up
-- invoice-ingest: customers and invoices as the accounting systems sent them, the payments applied
-- to them, the dunning timeline fed by the scheduler and notifier, and Idempotency-Key results.
-- Keys are COLLATE "C" (byte order: ids and external ids are identifiers, not words), which keeps
-- index maintenance cheap on the bulk-import path whatever the database's default collation.

CREATE TABLE customers (
    id           text COLLATE "C" PRIMARY KEY,     -- cus_...
    tenant_id    text COLLATE "C" NOT NULL REFERENCES tenants (id),
    external_id  text COLLATE "C" NOT NULL,
    name         text        NOT NULL,
    email        text        NOT NULL,
    locale       text        NOT NULL,
    timezone     text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, external_id)
);

-- No foreign keys on this table: a bulk import writes 10,000 rows per statement and a per-row RI
-- check would cost a fifth of it. Its only writer takes tenant_id from the authenticated API key and
-- customer_id from the customer upsert in the same transaction; tenants and customers are never deleted.
CREATE TABLE invoices (
    id                  text COLLATE "C" PRIMARY KEY,  -- inv_... (time-ordered: id order = creation order)
    tenant_id           text COLLATE "C" NOT NULL,
    external_id         text COLLATE "C" NOT NULL,
    number              text        NOT NULL,
    customer_id         text COLLATE "C" NOT NULL,
    currency            text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    amount_due          numeric     NOT NULL CHECK (amount_due > 0),
    balance             numeric     NOT NULL,
    status              text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'paid', 'void')),
    issue_date          date        NOT NULL,
    due_date            date        NOT NULL CHECK (due_date >= issue_date),
    payment_url         text,
    metadata            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- SHA-256 of the canonical request content: "same external_id, same content" is an idempotent
    -- replay, anything else a conflict.
    content_hash        bytea       NOT NULL,
    created_at          timestamptz NOT NULL,
    -- The payment whose balance_remaining is the current balance (latest by acknowledged_at), so
    -- an older PaymentReceived that arrives late never overwrites a newer balance.
    balance_as_of       timestamptz,
    balance_payment_id  text,
    UNIQUE (tenant_id, external_id)
);
-- Lists: newest first per tenant, optionally per customer. Status filters on 'paid'/'void' use the
-- partial index (new invoices are open, so imports pay nothing for it); 'open' and due-date
-- filters walk the tenant's newest invoices.
CREATE INDEX invoices_tenant_id ON invoices (tenant_id, id DESC);
CREATE INDEX invoices_tenant_customer ON invoices (tenant_id, customer_id, id DESC);
CREATE INDEX invoices_tenant_closed ON invoices (tenant_id, status, id DESC) WHERE status <> 'open';

CREATE TABLE payments (
    payment_id         text COLLATE "C" PRIMARY KEY,  -- pay_... from reconciliation
    invoice_id         text COLLATE "C" NOT NULL REFERENCES invoices (id),
    tenant_id          text        NOT NULL,
    source             text        NOT NULL,
    source_reference   text        NOT NULL,
    currency           text        NOT NULL,
    amount             numeric     NOT NULL,
    amount_applied     numeric     NOT NULL,
    balance_remaining  numeric     NOT NULL,
    settled            boolean     NOT NULL,
    received_at        timestamptz NOT NULL,
    acknowledged_at    timestamptz NOT NULL,
    recorded_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payments_invoice ON payments (invoice_id, acknowledged_at);

-- One row per planned stage; converges whatever order the stage events arrive in.
-- rank: scheduled/skipped 0 < escalated 1 < sent/failed/cancelled 2; the state with the highest
-- (rank, changed_at, state) wins, so a terminal state never goes back.
CREATE TABLE stages (
    stage_id      text COLLATE "C" PRIMARY KEY,   -- stg_...
    invoice_id    text COLLATE "C" NOT NULL REFERENCES invoices (id),
    tenant_id     text        NOT NULL,
    stage         text        NOT NULL,
    sequence      integer,                         -- NULL until the plan that introduces it arrives
    channel       text        NOT NULL,
    scheduled_at  timestamptz,
    planned_at    timestamptz,                     -- the plan the attributes above come from
    state         text        NOT NULL,
    rank          smallint    NOT NULL,
    reason        text,
    changed_at    timestamptz NOT NULL
);
CREATE INDEX stages_invoice ON stages (invoice_id);

CREATE TABLE stage_history (
    stage_id  text COLLATE "C" NOT NULL REFERENCES stages (stage_id),
    event_id  uuid        NOT NULL,
    state     text        NOT NULL,
    rank      smallint    NOT NULL,
    at        timestamptz NOT NULL,
    reason    text,
    PRIMARY KEY (stage_id, event_id)
);

-- Idempotency-Key (Stripe's semantics): the first request's fingerprint and response, 24 h.
-- status IS NULL while the first request is in flight.
CREATE TABLE idempotency_keys (
    tenant_id     text        NOT NULL,
    key           text        NOT NULL,
    fingerprint   bytea       NOT NULL,
    status        smallint,
    headers       jsonb,
    body          bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    locked_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- migrate:down
DROP TABLE idempotency_keys;
DROP TABLE stage_history;
DROP TABLE stages;
DROP TABLE payments;
DROP TABLE invoices;
DROP TABLE customers;
