-- migrate:up
-- Payment plans (issue 9): a customer's open invoices, in one currency, paid in instalments. The
-- plan is acknowledged here (PaymentPlanAgreed, under the acknowledgement fence); the scheduler judges
-- it (InstalmentMissed, PaymentPlanBroken, PaymentPlanCompleted), which sets its status here.

CREATE TABLE payment_plans (
    id                  text COLLATE "C" PRIMARY KEY,  -- pln_... (time-ordered)
    tenant_id           text COLLATE "C" NOT NULL,
    customer_id         text COLLATE "C" NOT NULL REFERENCES customers (id),
    currency            text        NOT NULL,
    total               numeric     NOT NULL CHECK (total > 0),
    status              text        NOT NULL DEFAULT 'active'
                                    CHECK (status IN ('active', 'completed', 'broken', 'cancelled')),
    agreed_by           text        NOT NULL,
    acknowledged_at     timestamptz NOT NULL,       -- read under invoice-ingest's acknowledgement fence
    event_id            uuid        NOT NULL,       -- its PaymentPlanAgreed
    missed_instalment   integer,                    -- InstalmentMissed's number
    missed_at           timestamptz,
    ended_at            timestamptz,                -- completed, broken or cancelled
    ended_by            text,                       -- who cancelled it
    end_reason          text
);
-- GET /v1/payment-plans: newest first per tenant, optionally per customer.
CREATE INDEX payment_plans_tenant ON payment_plans (tenant_id, id DESC);
CREATE INDEX payment_plans_customer ON payment_plans (tenant_id, customer_id, id DESC);

-- The invoices a plan covers, with their balance when it was agreed (what was paid since is the
-- drop of their balances: dunning.plans.paid_towards). `active` mirrors the plan's status so that
-- an invoice is in at most one active plan, whatever two concurrent requests do.
CREATE TABLE payment_plan_invoices (
    plan_id     text COLLATE "C" NOT NULL REFERENCES payment_plans (id),
    invoice_id  text COLLATE "C" NOT NULL REFERENCES invoices (id),
    position    integer     NOT NULL,            -- 0, 1, ... as the request listed them (the first carries the reminders)
    balance     numeric     NOT NULL CHECK (balance > 0),
    active      boolean     NOT NULL DEFAULT true,
    PRIMARY KEY (plan_id, invoice_id)
);
CREATE UNIQUE INDEX payment_plan_invoices_active ON payment_plan_invoices (invoice_id) WHERE active;
CREATE INDEX payment_plan_invoices_invoice ON payment_plan_invoices (invoice_id);  -- an invoice's plans

CREATE TABLE payment_plan_instalments (
    plan_id   text COLLATE "C" NOT NULL REFERENCES payment_plans (id),
    number    integer     NOT NULL CHECK (number >= 1),
    due_date  date        NOT NULL,
    amount    numeric     NOT NULL CHECK (amount > 0),
    PRIMARY KEY (plan_id, number)
);

-- migrate:down
DROP TABLE payment_plan_instalments;
DROP TABLE payment_plan_invoices;
DROP TABLE payment_plans;
