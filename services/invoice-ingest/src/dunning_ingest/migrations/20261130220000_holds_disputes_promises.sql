-- migrate:up
-- Every reason to stop (issue 9): holds (on an invoice or a whole customer), disputes and promises
-- to pay, each acknowledged by invoice-ingest under its acknowledgement fence (`acknowledged_at`),
-- and the stop events the scheduler and notifier report back (pauses, resumes, dropped deliveries,
-- plan outcomes) for each invoice's timeline.

-- A hold's status is derived at read: released (released_at set), expired (ends_at passed), active.
CREATE TABLE holds (
    hold_id          text COLLATE "C" PRIMARY KEY,     -- hld_... (time-ordered: list order)
    tenant_id        text COLLATE "C" NOT NULL,
    customer_id      text COLLATE "C" NOT NULL REFERENCES customers (id),
    invoice_id       text COLLATE "C" REFERENCES invoices (id),  -- NULL: every invoice of the customer
    reason           text        NOT NULL,
    placed_by        text        NOT NULL,
    ends_at          timestamptz,                       -- NULL: until released
    acknowledged_at  timestamptz NOT NULL,
    released_at      timestamptz,
    released_by      text,
    event_id         uuid        NOT NULL              -- the HoldPlaced published for it
);
CREATE INDEX holds_tenant ON holds (tenant_id, hold_id DESC);
CREATE INDEX holds_customer ON holds (customer_id, hold_id DESC);
CREATE INDEX holds_invoice ON holds (invoice_id) WHERE invoice_id IS NOT NULL;

CREATE TABLE disputes (
    dispute_id       text COLLATE "C" PRIMARY KEY,     -- dsp_...
    invoice_id       text COLLATE "C" NOT NULL REFERENCES invoices (id),
    tenant_id        text COLLATE "C" NOT NULL,
    status           text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'upheld', 'rejected')),
    reason           text        NOT NULL,
    currency         text        NOT NULL,
    disputed_amount  numeric     CHECK (disputed_amount > 0),  -- NULL: the whole invoice
    opened_by        text        NOT NULL,
    acknowledged_at  timestamptz NOT NULL,
    resolved_at      timestamptz,
    credit_amount    numeric     CHECK (credit_amount > 0),
    note             text,
    resolved_by      text,
    event_id         uuid        NOT NULL
);
CREATE INDEX disputes_invoice ON disputes (invoice_id, dispute_id);
-- At most one open dispute per invoice (a second one is a 409; this holds it under concurrency).
CREATE UNIQUE INDEX disputes_one_open ON disputes (invoice_id) WHERE status = 'open';

CREATE TABLE promises (
    promise_id       text COLLATE "C" PRIMARY KEY,     -- prm_...
    invoice_id       text COLLATE "C" NOT NULL REFERENCES invoices (id),
    tenant_id        text COLLATE "C" NOT NULL,
    status           text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'kept', 'broken')),
    currency         text        NOT NULL,
    amount           numeric     NOT NULL CHECK (amount > 0),
    promised_date    date        NOT NULL,
    made_by          text        NOT NULL,
    note             text,
    acknowledged_at  timestamptz NOT NULL,
    deadline         timestamptz,                       -- known once the scheduler judged it broken
    paid_amount      numeric,                           -- paid since the promise, as the scheduler judged it
    settled_at       timestamptz,                       -- when it was judged kept or broken
    event_id         uuid        NOT NULL
);
CREATE INDEX promises_invoice ON promises (invoice_id, promise_id);
CREATE UNIQUE INDEX promises_one_pending ON promises (invoice_id) WHERE status = 'pending';

-- What the scheduler and notifier report about an invoice's stops, one row per event and invoice
-- (a plan's events name several invoices): paused, resumed, reminder_cancelled, and the plan
-- outcomes (payment_plan_*, instalment_missed). `reference`: the hold, dispute, promise or plan id
-- (reminder_cancelled: the stage id); `data`: what else the timeline shows of it.
CREATE TABLE stop_events (
    invoice_id  text COLLATE "C" NOT NULL REFERENCES invoices (id),
    event_id    uuid        NOT NULL,
    tenant_id   text        NOT NULL,
    kind        text        NOT NULL,
    at          timestamptz NOT NULL,
    reference   text,
    reason      text,
    amount      numeric,
    data        jsonb,
    PRIMARY KEY (invoice_id, event_id)
);

-- migrate:down
DROP TABLE stop_events;
DROP TABLE promises;
DROP TABLE disputes;
DROP TABLE holds;
