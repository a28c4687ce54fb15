-- migrate:up
-- Money in (issue 11): a payment allocated to one or several invoices (allocations), an
-- over-payment's excess kept as customer credit, money taken back (reversals), and the payer
-- accounts learnt from manual allocations. Every change of an invoice's balance counts in
-- `balance_version` (the events state it: the higher version states the later balance).

ALTER TABLE invoices ADD COLUMN customer_id text;
ALTER TABLE invoices ADD COLUMN due_date date;
ALTER TABLE invoices ADD COLUMN balance_version integer NOT NULL DEFAULT 0;
CREATE INDEX invoices_tenant_customer_open ON invoices (tenant_id, customer_id, currency, due_date, invoice_id)
    WHERE status = 'open';

ALTER TABLE payments DROP CONSTRAINT payments_source_check;
ALTER TABLE payments ADD CONSTRAINT payments_source_check
    CHECK (source IN ('stripe', 'api', 'bank_statement', 'gocardless', 'standard_webhooks'));
-- applied: wholly allocated (or credited); partially_allocated: some money still unallocated;
-- unmatched: in the queue; processing: a debit not yet settled (nothing applied); failed: a debit
-- that never settled; reversed: all of it taken back.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('applied', 'partially_allocated', 'unmatched', 'processing', 'failed',
                      'rejected_currency_mismatch', 'invoice_closed', 'reversed'));
ALTER TABLE payments ADD COLUMN amount_refunded numeric NOT NULL DEFAULT 0;
-- Money of the payment neither allocated, nor credited to the customer, nor taken back (the queue's
-- amount). `unapplied_amount` keeps its meaning: not applied to invoices (credited + unallocated).
ALTER TABLE payments ADD COLUMN unallocated_amount numeric NOT NULL DEFAULT 0;
UPDATE payments SET unallocated_amount = unapplied_amount;
ALTER TABLE payments ADD COLUMN customer_id text;
ALTER TABLE payments ADD COLUMN payer_name text;
-- The payer's IBAN, normalised: upper case, no spaces.
ALTER TABLE payments ADD COLUMN payer_account text;
ALTER TABLE payments ADD COLUMN remittance text;
ALTER TABLE payments ADD COLUMN creditor_reference text;
ALTER TABLE payments ADD COLUMN statement_id text;
-- The queue's candidates for an unmatched payment: [{invoice_id, amount, reason}, ...].
ALTER TABLE payments ADD COLUMN suggestions jsonb;
ALTER TABLE payments ADD COLUMN match_rule text;
ALTER TABLE payments ADD COLUMN match_reason text;
CREATE INDEX payments_tenant_status ON payments (tenant_id, status, payment_id);

-- One row per allocation of a payment's money to an invoice. An undone allocation keeps its row
-- (unallocated_at); a reversal reduces `amount` and records the part taken in reversal_parts.
CREATE TABLE allocations (
    allocation_id       text PRIMARY KEY,
    tenant_id           text        NOT NULL,
    payment_id          text        NOT NULL REFERENCES payments (payment_id),
    invoice_id          text        NOT NULL REFERENCES invoices (invoice_id),
    currency            text        NOT NULL,
    amount              numeric     NOT NULL CHECK (amount >= 0),
    rule                text        NOT NULL,
    reason              text        NOT NULL,
    allocated_by        text        NOT NULL CHECK (allocated_by IN ('system', 'api')),
    created_at          timestamptz NOT NULL DEFAULT now(),
    unallocated_at      timestamptz,
    unallocation_reason text
);
CREATE INDEX allocations_payment ON allocations (payment_id, created_at, allocation_id);
CREATE INDEX allocations_invoice ON allocations (invoice_id, created_at);

-- Applied payments of before: one allocation each (the whole amount applied).
INSERT INTO allocations (allocation_id, tenant_id, payment_id, invoice_id, currency, amount, rule, reason,
                         allocated_by, created_at)
SELECT 'alc_' || substr(md5(payment_id), 1, 26), tenant_id, payment_id, invoice_id, currency, amount_applied,
       'legacy', 'applied before allocations were recorded', 'system', coalesce(applied_at, created_at)
FROM payments WHERE status = 'applied' AND invoice_id IS NOT NULL AND amount_applied > 0;

-- An over-payment's excess, held for the customer: applied to its open invoices (credit_applications).
CREATE TABLE customer_credits (
    credit_id          text PRIMARY KEY,
    tenant_id          text        NOT NULL,
    customer_id        text        NOT NULL,
    currency           text        NOT NULL,
    -- a reversal takes from both (amount: what the payment still credits; remaining: not yet applied)
    amount             numeric     NOT NULL CHECK (amount >= 0),
    remaining          numeric     NOT NULL CHECK (remaining >= 0 AND remaining <= amount),
    source_payment_id  text        NOT NULL REFERENCES payments (payment_id),
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customer_credits_open ON customer_credits (tenant_id, customer_id, currency, created_at)
    WHERE remaining > 0;
CREATE INDEX customer_credits_payment ON customer_credits (source_payment_id);

CREATE TABLE credit_applications (
    application_id  text PRIMARY KEY,
    credit_id       text        NOT NULL REFERENCES customer_credits (credit_id),
    invoice_id      text        NOT NULL REFERENCES invoices (invoice_id),
    amount          numeric     NOT NULL CHECK (amount >= 0),  -- a reversal may reduce it
    applied_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX credit_applications_credit ON credit_applications (credit_id, applied_at);
CREATE INDEX credit_applications_invoice ON credit_applications (invoice_id);

-- Money taken back (refund, lost chargeback, failed debit): once per (tenant, source, reference).
CREATE TABLE reversals (
    reversal_id       text PRIMARY KEY,
    tenant_id         text        NOT NULL,
    payment_id        text        NOT NULL REFERENCES payments (payment_id),
    kind              text        NOT NULL CHECK (kind IN ('refund', 'chargeback', 'payment_failed')),
    source            text        NOT NULL,
    source_reference  text        NOT NULL,
    amount            numeric     NOT NULL CHECK (amount > 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, source, source_reference)
);
CREATE INDEX reversals_payment ON reversals (payment_id);

-- Where a reversal's money came from: an invoice's allocation, a credit application, or (invoice
-- null) the payment's unallocated money or its unused credit.
CREATE TABLE reversal_parts (
    reversal_id    text        NOT NULL REFERENCES reversals (reversal_id),
    invoice_id     text        REFERENCES invoices (invoice_id),
    allocation_id  text        REFERENCES allocations (allocation_id),
    application_id text        REFERENCES credit_applications (application_id),
    amount         numeric     NOT NULL CHECK (amount > 0)
);
CREATE INDEX reversal_parts_reversal ON reversal_parts (reversal_id);

-- A payer's bank account learnt from a manual allocation: its later payments match its customer.
CREATE TABLE payer_accounts (
    tenant_id               text        NOT NULL,
    account                 text        NOT NULL,
    customer_id             text        NOT NULL,
    learned_from_payment_id text,
    learned_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, account)
);

-- migrate:down
DROP TABLE payer_accounts;
DROP TABLE reversal_parts;
DROP TABLE reversals;
DROP TABLE credit_applications;
DROP TABLE customer_credits;
DROP TABLE allocations;
DROP INDEX payments_tenant_status;
ALTER TABLE payments DROP COLUMN match_reason;
ALTER TABLE payments DROP COLUMN match_rule;
ALTER TABLE payments DROP COLUMN suggestions;
ALTER TABLE payments DROP COLUMN statement_id;
ALTER TABLE payments DROP COLUMN creditor_reference;
ALTER TABLE payments DROP COLUMN remittance;
ALTER TABLE payments DROP COLUMN payer_account;
ALTER TABLE payments DROP COLUMN payer_name;
ALTER TABLE payments DROP COLUMN customer_id;
ALTER TABLE payments DROP COLUMN unallocated_amount;
ALTER TABLE payments DROP COLUMN amount_refunded;
DELETE FROM payments WHERE source NOT IN ('stripe', 'api');
UPDATE payments SET status = 'applied' WHERE status IN ('partially_allocated', 'reversed');
UPDATE payments SET status = 'unmatched' WHERE status IN ('processing', 'failed');
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('applied', 'unmatched', 'rejected_currency_mismatch', 'invoice_closed'));
ALTER TABLE payments DROP CONSTRAINT payments_source_check;
ALTER TABLE payments ADD CONSTRAINT payments_source_check CHECK (source IN ('stripe', 'api'));
DROP INDEX invoices_tenant_customer_open;
ALTER TABLE invoices DROP COLUMN balance_version;
ALTER TABLE invoices DROP COLUMN due_date;
ALTER TABLE invoices DROP COLUMN customer_id;
