-- migrate:up
-- Every reason to stop (issue 9): holds, disputes, promises to pay and payment plans pause an
-- invoice's dunning; the scheduler keeps them here and decides their deadlines itself.

-- A paused timer waits: it never fires while its invoice has an active pause, and comes back
-- (scheduled or skipped) when the last one ends. `kind`: policy (a stage of the policy, what
-- re-planning works on), promise_broken (added when a promise is broken), instalment (a payment
-- plan's reminder). `context`: what the reminder quotes besides the invoice (StageEscalated.context).
ALTER TABLE timers DROP CONSTRAINT timers_state_check;
ALTER TABLE timers ADD CONSTRAINT timers_state_check
    CHECK (state IN ('scheduled', 'paused', 'fired', 'cancelled', 'skipped'));
ALTER TABLE timers
    ADD COLUMN kind text NOT NULL DEFAULT 'policy' CHECK (kind IN ('policy', 'promise_broken', 'instalment')),
    ADD COLUMN context jsonb;
CREATE INDEX timers_paused ON timers (invoice_id) WHERE state = 'paused';

-- One row per (cause, invoice) it pauses, or one per customer hold (scope customer, invoice_id
-- null: every invoice of the customer, present and future). `since` is when the stop was
-- acknowledged. state: active | awaiting_credit (a dispute upheld with a credit, until the credit
-- note is applied) | ended. Both non-ended states pause. `detail` keeps what the cause's decisions
-- need (a promise's amount and date, a dispute's outcome); `paid` is what a promise has been paid
-- since it was made (payments and credits acknowledged at or after `since`).
CREATE TABLE pauses (
    pause_id       text PRIMARY KEY,           -- <cause_id> (customer scope) or <cause_id>/<invoice_id>
    cause          text        NOT NULL CHECK (cause IN ('hold', 'dispute', 'promise', 'payment_plan')),
    cause_id       text        NOT NULL,
    scope          text        NOT NULL CHECK (scope IN ('invoice', 'customer')),
    tenant_id      text        NOT NULL,
    invoice_id     text,
    customer_id    text,
    since          timestamptz NOT NULL,
    ends_at        timestamptz,
    state          text        NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'awaiting_credit', 'ended')),
    detail         jsonb       NOT NULL DEFAULT '{}',
    paid           numeric(20, 4) NOT NULL DEFAULT 0,
    cause_event_id uuid,
    ended_at       timestamptz,
    end_reason     text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((scope = 'invoice') = (invoice_id IS NOT NULL))
);
CREATE INDEX pauses_cause ON pauses (cause_id);
CREATE INDEX pauses_invoice_live ON pauses (invoice_id) WHERE state <> 'ended';
CREATE INDEX pauses_customer_live ON pauses (tenant_id, customer_id) WHERE state <> 'ended' AND scope = 'customer';

-- Payment plans as agreed (PaymentPlanAgreed): the invoices with their balances then, the
-- instalments; status active | completed | broken | cancelled. first_invoice_id carries the
-- instalment reminders.
CREATE TABLE payment_plans (
    plan_id          text PRIMARY KEY,
    tenant_id        text        NOT NULL,
    customer_id      text        NOT NULL,
    currency         text        NOT NULL,
    total            numeric(20, 4) NOT NULL,
    invoices         jsonb       NOT NULL,     -- [{"invoice_id", "balance"}] as agreed
    instalments      jsonb       NOT NULL,     -- [{"number", "due_date", "amount"}]
    first_invoice_id text        NOT NULL,
    status           text        NOT NULL DEFAULT 'active'
                                 CHECK (status IN ('active', 'completed', 'broken', 'cancelled')),
    acknowledged_at  timestamptz NOT NULL,
    finished_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_plans_active_invoices ON payment_plans USING gin (invoices jsonb_path_ops) WHERE status = 'active';

-- The decisions that wait for a time: a hold's end (ungated), a promise's deadline and an
-- instalment's (gated: judged only once the firing gate's watermark is at or past `at`, so every
-- payment acknowledged before it has been applied). The deadline loop takes them in time order.
CREATE TABLE deadlines (
    kind       text        NOT NULL CHECK (kind IN ('hold_end', 'promise', 'instalment')),
    cause_id   text        NOT NULL,
    number     integer     NOT NULL DEFAULT 0,      -- an instalment's number
    tenant_id  text        NOT NULL,
    at         timestamptz NOT NULL,
    gated      boolean     NOT NULL,
    PRIMARY KEY (kind, cause_id, number)
);
CREATE INDEX deadlines_at ON deadlines (at);

-- migrate:down
DROP TABLE deadlines;
DROP TABLE payment_plans;
DROP TABLE pauses;
DROP INDEX timers_paused;
ALTER TABLE timers DROP COLUMN context, DROP COLUMN kind;
ALTER TABLE timers DROP CONSTRAINT timers_state_check;
ALTER TABLE timers ADD CONSTRAINT timers_state_check
    CHECK (state IN ('scheduled', 'fired', 'cancelled', 'skipped'));
