-- migrate:up
-- A payment's invoice and an allocation's payment and invoice no longer checked by foreign key: each
-- check is a `SELECT ... FOR KEY SHARE` per row (three per matched line of a statement import), a
-- quarter of PostgreSQL's time on those two inserts on the statements bench. Integrity is kept by
-- the only writers instead (docs/money-in.md#integrity-without-foreign-keys): allocations.allocate
-- and allocations_batch.allocate_many write an allocation only for an invoice they hold locked
-- (FOR UPDATE, of the payment's tenant; an unknown one is refused) and a payment stored earlier in
-- the same transaction; a payment's invoice_id is always taken from an invoice row locked in the
-- transaction that sets it; and no invoice or payment is ever deleted.
-- tests/integration/test_allocations_batch.py holds it.

ALTER TABLE allocations DROP CONSTRAINT allocations_payment_id_fkey;
ALTER TABLE allocations DROP CONSTRAINT allocations_invoice_id_fkey;
ALTER TABLE payments DROP CONSTRAINT payments_invoice_id_fkey;

-- migrate:down
ALTER TABLE payments
    ADD CONSTRAINT payments_invoice_id_fkey FOREIGN KEY (invoice_id) REFERENCES invoices (invoice_id);
ALTER TABLE allocations
    ADD CONSTRAINT allocations_invoice_id_fkey FOREIGN KEY (invoice_id) REFERENCES invoices (invoice_id);
ALTER TABLE allocations
    ADD CONSTRAINT allocations_payment_id_fkey FOREIGN KEY (payment_id) REFERENCES payments (payment_id);
