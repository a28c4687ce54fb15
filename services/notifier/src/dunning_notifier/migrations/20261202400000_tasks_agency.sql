-- migrate:up
-- Collections (docs/collections.md): call tasks for a collector, and the hand-off to a collection agency.
-- A stage on the `call` channel makes one task (its delivery's id is unique here: a retried send finds
-- the task it made); a `callback_requested` outcome makes one follow-up (follow_up_of unique).
CREATE TABLE tasks (
    task_id          text        PRIMARY KEY,
    tenant_id        text        NOT NULL,
    invoice_id       text        NOT NULL,
    customer_id      text,
    stage            text        NOT NULL,
    stage_id         text,
    delivery_id      text        UNIQUE,
    follow_up_of     text        UNIQUE REFERENCES tasks (task_id),
    due_at           timestamptz NOT NULL,
    state            text        NOT NULL DEFAULT 'open'
                                 CHECK (state IN ('open', 'assigned', 'completed', 'cancelled')),
    assignee         text,
    currency         text,       -- the invoice's, from the stage's payload
    balance          numeric,    -- the invoice's balance when the stage fired (a promise is at most it)
    customer_timezone text,
    phone            text,
    outcome          text,
    promised_amount  numeric,
    promised_date    date,
    dispute_reason   text,
    callback_at      timestamptz,
    note             text,
    completed_by     text,
    completed_at     timestamptz,
    cancel_reason    text,
    cancelled_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (state <> 'completed' OR outcome IS NOT NULL)
);
CREATE INDEX tasks_tenant ON tasks (tenant_id, task_id DESC);
CREATE INDEX tasks_invoice_open ON tasks (tenant_id, invoice_id) WHERE state IN ('open', 'assigned');

-- One tenant's collection agency: webhook (the case file POSTed, signed with `secret`, Standard
-- Webhooks) or export (the agency downloads the case and acknowledges it).
CREATE TABLE agencies (
    tenant_id         text        PRIMARY KEY,
    name              text        NOT NULL,
    mode              text        NOT NULL CHECK (mode IN ('webhook', 'export')),
    url               text,
    contact_email     text        NOT NULL,
    secret            text,       -- whsec_...: webhook mode only
    secret_rotated_at timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (mode <> 'webhook' OR (url IS NOT NULL AND secret IS NOT NULL))
);

-- One case per agency-stage delivery (unique: a retried send finds its case).
CREATE TABLE agency_cases (
    case_id          text        PRIMARY KEY,
    tenant_id        text        NOT NULL,
    invoice_id       text        NOT NULL,
    customer_id      text,
    delivery_id      text        NOT NULL UNIQUE,
    agency_name      text        NOT NULL,
    mode             text        NOT NULL CHECK (mode IN ('webhook', 'export')),
    state            text        NOT NULL CHECK (state IN ('sending', 'awaiting_acknowledgement', 'handed_over')),
    case_file        jsonb       NOT NULL,
    balance          numeric     NOT NULL,
    currency         text        NOT NULL,
    attempts         integer     NOT NULL DEFAULT 0,
    last_error       text,
    acknowledged_by  text,
    handed_over_at   timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agency_cases_tenant ON agency_cases (tenant_id, case_id DESC);

-- Idempotency-Key of the collections routes (task assign/complete, case acknowledge): the first answer.
CREATE TABLE collections_idempotency (
    tenant_id    text        NOT NULL,
    key          text        NOT NULL,
    fingerprint  text        NOT NULL,
    status       integer     NOT NULL,
    body         jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);

-- migrate:down
DROP TABLE collections_idempotency;
DROP TABLE agency_cases;
DROP TABLE agencies;
DROP TABLE tasks;
