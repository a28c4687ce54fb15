-- migrate:up
-- Planning writes thousands of timers a second, and every index and foreign-key check is paid per
-- row (together about a fifth of the planning statement's time).
-- timers_invoice repeats the leading column of the (invoice_id, stage, channel) unique index, which
-- serves every lookup by invoice.
DROP INDEX timers_invoice;
-- Timers are written only by the statement that stores their invoice (repository.plan_invoices) or
-- right after it in the same transaction, and invoices are never deleted: the per-row check of the
-- foreign key guarded nothing that can happen.
ALTER TABLE timers DROP CONSTRAINT timers_invoice_id_fkey;

-- migrate:down
ALTER TABLE timers ADD CONSTRAINT timers_invoice_id_fkey
    FOREIGN KEY (invoice_id) REFERENCES invoices (invoice_id) ON DELETE CASCADE;
CREATE INDEX timers_invoice ON timers (invoice_id, sequence);
