-- migrate:up
-- Money in (issue 11): a PaymentReceived is now ONE ALLOCATION of a payment (a payment split across
-- invoices reports one each), so payments are keyed by the allocation (the payment id for an event
-- from before allocations); the other changes of an invoice's balance (an allocation undone, money
-- reversed, customer credit applied) are money_entries; money whose fate is open (a debit still
-- processing, a disputed card payment) is pending_money. The balance is amount_due minus Σ applied
-- (payments, credit notes, money_entries.applied: negative for a reversal or an unallocation).

ALTER TABLE payments
    ADD COLUMN allocation_id    text COLLATE "C",   -- alc_... (NULL: an event from before allocations)
    ADD COLUMN match_rule       text,
    ADD COLUMN match_reason     text,
    ADD COLUMN balance_version  integer,
    ADD COLUMN entry_id         text COLLATE "C" GENERATED ALWAYS AS (coalesce(allocation_id, payment_id)) STORED;
ALTER TABLE payments DROP CONSTRAINT payments_pkey;
ALTER TABLE payments ADD PRIMARY KEY (entry_id);
ALTER TABLE credit_notes ADD COLUMN balance_version integer;

-- One row per (invoice, kind, the event's id field): unallocated (the allocation id), reversed (the
-- reversal id: one reversal may touch several invoices, one event each), credit_applied (the
-- application id). `amount` is what moved (> 0); `applied` its effect on Σ applied: credit_applied
-- +amount, reversed and unallocated -amount (they raise the balance).
CREATE TABLE money_entries (
    invoice_id         text COLLATE "C" NOT NULL REFERENCES invoices (id),
    kind               text        NOT NULL CHECK (kind IN ('unallocated', 'reversed', 'credit_applied')),
    entry_id           text COLLATE "C" NOT NULL,
    tenant_id          text        NOT NULL,
    payment_id         text COLLATE "C" NOT NULL,   -- credit_applied: the payment whose excess it was
    currency           text        NOT NULL,
    amount             numeric     NOT NULL CHECK (amount >= 0),
    applied            numeric     NOT NULL,
    balance_remaining  numeric     NOT NULL,        -- reconciliation's balance after it
    settled            boolean     NOT NULL,
    balance_version    integer     NOT NULL,
    at                 timestamptz NOT NULL,
    reason             text,
    data               jsonb       NOT NULL DEFAULT '{}'::jsonb,
    recorded_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (invoice_id, kind, entry_id)
);

-- One row per pending episode (invoice, payment, kind, since): opened by PaymentPending, ended by
-- PaymentPendingEnded (outcome); a second dispute of the same payment is another row.
CREATE TABLE pending_money (
    invoice_id        text COLLATE "C" NOT NULL REFERENCES invoices (id),
    payment_id        text COLLATE "C" NOT NULL,
    kind              text        NOT NULL CHECK (kind IN ('processing', 'chargeback')),
    tenant_id         text        NOT NULL,
    source            text        NOT NULL,
    source_reference  text        NOT NULL,
    currency          text        NOT NULL,
    amount            numeric     NOT NULL,
    since             timestamptz NOT NULL,
    acknowledged_at   timestamptz NOT NULL,
    ended_at          timestamptz,
    outcome           text CHECK (outcome IN ('succeeded', 'failed', 'won', 'lost')),
    ended_reference   text,
    PRIMARY KEY (invoice_id, payment_id, kind, since)
);

-- migrate:down
ALTER TABLE credit_notes DROP COLUMN balance_version;
DROP TABLE pending_money;
DROP TABLE money_entries;
ALTER TABLE payments DROP CONSTRAINT payments_pkey;
ALTER TABLE payments DROP COLUMN entry_id, DROP COLUMN allocation_id, DROP COLUMN match_rule,
    DROP COLUMN match_reason, DROP COLUMN balance_version;
ALTER TABLE payments ADD PRIMARY KEY (payment_id);
