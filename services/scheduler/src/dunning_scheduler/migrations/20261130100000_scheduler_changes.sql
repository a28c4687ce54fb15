-- migrate:up
-- Invoice changes (issue 8): the scheduler's invoice copy gets a version and a status, its customer
-- a row of its own (the latest CustomerUpdated), and a policy applied to open invoices a job.

-- version: 1 at creation, +1 per change (InvoiceUpdated, InvoiceVoided, InvoiceWrittenOff); an event
-- whose version is not newer is ignored. status: a void or a write-off closes the invoice (paid is
-- `settled`). customer_id finds a customer's invoices; customer_as_of is when the snapshot in
-- `customer` was taken (the event's time), so an older CustomerUpdated never overwrites it.
-- policy_is_default: planned with the built-in default (whose version, 1, a tenant's first stored
-- version shares), so a re-plan uses the very policy the invoice was planned with.
ALTER TABLE invoices
    ADD COLUMN version integer NOT NULL DEFAULT 1,
    ADD COLUMN status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'void', 'written_off')),
    ADD COLUMN closed_at timestamptz,
    ADD COLUMN customer_id text,
    ADD COLUMN customer_as_of timestamptz,
    ADD COLUMN policy_is_default boolean NOT NULL DEFAULT false;
UPDATE invoices SET customer_id = customer ->> 'customer_id', customer_as_of = created_at WHERE customer IS NOT NULL;
UPDATE invoices AS i SET policy_is_default = NOT EXISTS (
    SELECT 1 FROM policies AS p
    WHERE p.tenant_id = i.tenant_id AND p.version = i.policy_version AND p.created_at <= i.planned_at)
WHERE i.planned_at IS NOT NULL;
-- What re-planning walks: a customer's open invoices (time-zone change), a tenant's (apply_to).
CREATE INDEX invoices_open_by_customer ON invoices (tenant_id, customer_id) WHERE status = 'open' AND NOT settled;
CREATE INDEX invoices_open ON invoices (tenant_id, invoice_id) WHERE status = 'open' AND NOT settled;

-- The latest CustomerUpdated of each customer (version-guarded, latest wins).
CREATE TABLE customers (
    customer_id text PRIMARY KEY,
    tenant_id   text        NOT NULL,
    external_id text        NOT NULL,
    version     integer     NOT NULL,
    name        text        NOT NULL,
    email       text        NOT NULL,
    cc          jsonb       NOT NULL DEFAULT '[]',
    locale      text        NOT NULL,
    timezone    text        NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- A policy version applied to a tenant's open invoices (PUT /v1/policy?apply_to=open_invoices),
-- worked batch by batch by the replan loop in invoice id order; after_invoice_id is the cursor.
-- A newer job for the same tenant supersedes a running one.
CREATE TABLE replans (
    replan_id            text PRIMARY KEY,
    tenant_id            text        NOT NULL,
    policy_version       integer     NOT NULL,
    status               text        NOT NULL DEFAULT 'running'
                                     CHECK (status IN ('running', 'done', 'superseded')),
    after_invoice_id     text        NOT NULL DEFAULT '',
    invoices_total       integer     NOT NULL,
    invoices_done        integer     NOT NULL DEFAULT 0,
    invoices_rescheduled integer     NOT NULL DEFAULT 0,
    batches              integer     NOT NULL DEFAULT 0,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    finished_at          timestamptz
);
CREATE INDEX replans_running ON replans (created_at) WHERE status = 'running';
CREATE INDEX replans_tenant ON replans (tenant_id, created_at);

-- migrate:down
DROP TABLE replans;
DROP TABLE customers;
DROP INDEX invoices_open;
DROP INDEX invoices_open_by_customer;
ALTER TABLE invoices
    DROP COLUMN policy_is_default,
    DROP COLUMN customer_as_of,
    DROP COLUMN customer_id,
    DROP COLUMN closed_at,
    DROP COLUMN status,
    DROP COLUMN version;
