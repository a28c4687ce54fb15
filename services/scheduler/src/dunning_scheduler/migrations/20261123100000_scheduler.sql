-- migrate:up
-- Scheduler: tenant policies (versioned documents), invoice snapshots, and one timer per
-- (stage, channel) of each invoice's dunning plan.

-- A tenant's policy is a JSON document; every change is a new version, the latest one is active.
-- No row: the built-in default policy applies.
CREATE TABLE policies (
    tenant_id   text        NOT NULL,
    version     integer     NOT NULL CHECK (version >= 1),
    document    jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, version)
);

-- The invoice as StageEscalated carries it. A row may exist before its InvoiceIssued (a payment
-- arrived first): then only tenant, balance and settlement are known and planned_at is null.
CREATE TABLE invoices (
    invoice_id              text PRIMARY KEY,
    tenant_id               text        NOT NULL,
    external_id             text,
    number                  text,
    currency                text,
    amount_due              numeric(20, 4),
    balance                 numeric(20, 4),
    issue_date              date,
    due_date                date,
    payment_url             text,
    customer                jsonb,
    issued_at               timestamptz,
    issued_event_id         uuid,
    policy_id               text,
    policy_version          integer,
    planned_at              timestamptz,
    settled                 boolean     NOT NULL DEFAULT false,
    settled_at              timestamptz,
    last_payment_id         text,
    last_payment_acknowledged_at timestamptz,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX invoices_tenant ON invoices (tenant_id, invoice_id);

CREATE TABLE timers (
    stage_id        text PRIMARY KEY,
    tenant_id       text        NOT NULL,
    invoice_id      text        NOT NULL REFERENCES invoices (invoice_id) ON DELETE CASCADE,
    stage           text        NOT NULL,
    sequence        integer     NOT NULL,
    channel         text        NOT NULL,
    template        text        NOT NULL,
    scheduled_at    timestamptz NOT NULL,
    state           text        NOT NULL CHECK (state IN ('scheduled', 'fired', 'cancelled', 'skipped')),
    fired_at        timestamptz,
    cancelled_at    timestamptz,
    reason          text,
    policy_version  integer     NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (invoice_id, stage, channel)
);
-- The firing loop's queue: only pending timers, by due time.
CREATE INDEX timers_due ON timers (scheduled_at) WHERE state = 'scheduled';
CREATE INDEX timers_invoice ON timers (invoice_id, sequence);

-- migrate:down
DROP TABLE timers;
DROP TABLE invoices;
DROP TABLE policies;
