-- migrate:up
-- Money in (issue 11). `balance_version` is reconciliation's count of the invoice's balance changes
-- as last stated to the scheduler (null: no versioned money event seen yet, or an old producer's):
-- a money event whose version is higher states the balance (and whether it is settled, so a refund
-- reopens a settled invoice); a lower one only records its money (money_applied). See
-- repository/money.py and docs/decisions/0018-money-in.md.
ALTER TABLE invoices ADD COLUMN balance_version integer;

-- Money still pending pauses dunning: a debit still processing (SEPA, ACH: not counted as paid)
-- and a disputed card payment (a chargeback), cause_id the payment's id (pay_...).
ALTER TABLE pauses DROP CONSTRAINT pauses_cause_check;
ALTER TABLE pauses ADD CONSTRAINT pauses_cause_check
    CHECK (cause IN ('hold', 'dispute', 'promise', 'payment_plan', 'payment_processing', 'chargeback'));

-- migrate:down
DELETE FROM pauses WHERE cause IN ('payment_processing', 'chargeback');
ALTER TABLE pauses DROP CONSTRAINT pauses_cause_check;
ALTER TABLE pauses ADD CONSTRAINT pauses_cause_check
    CHECK (cause IN ('hold', 'dispute', 'promise', 'payment_plan'));
ALTER TABLE invoices DROP COLUMN balance_version;
