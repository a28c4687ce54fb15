-- migrate:up
-- A statement import's balance updates made HOT (heap-only: no index touched). An update is HOT
-- only when no indexed column changes, partial indexes' predicates included, and the page has room:
-- the invoice indexes no longer name `status` (their `WHERE status = 'open'`) nor `balance`; the
-- queries keep their `status = 'open'` filter, and the open balances equal to a payment's amount
-- (the queue's suggestions) are read by a join (repository/matching.py) instead of an index.
-- Payments: `payments_unmatched` is covered by `payments_tenant_status` (tenant_id, status, ...).

ALTER TABLE invoices SET (fillfactor = 80);

DROP INDEX invoices_tenant_customer_open;
CREATE INDEX invoices_tenant_customer ON invoices (tenant_id, customer_id, currency, due_date, invoice_id);
DROP INDEX invoices_open_upper_number;
CREATE INDEX invoices_upper_number ON invoices (tenant_id, upper(number));
DROP INDEX invoices_open_upper_external_id;
CREATE INDEX invoices_upper_external_id ON invoices (tenant_id, upper(external_id));
DROP INDEX invoices_open_compact_number;
CREATE INDEX invoices_compact_number
    ON invoices (tenant_id, upper(regexp_replace(number, '[^0-9A-Za-z]', '', 'g')));
DROP INDEX invoices_open_customer_name;
CREATE INDEX invoices_customer_name ON invoices (tenant_id, lower(customer_name));
DROP INDEX invoices_open_balance;
DROP INDEX invoices_open_customer_words;
CREATE INDEX invoices_customer_words ON invoices USING gin (to_tsvector('simple', coalesce(customer_name, '')));

DROP INDEX payments_unmatched;

-- migrate:down
CREATE INDEX payments_unmatched ON payments (tenant_id) WHERE status = 'unmatched';

DROP INDEX invoices_customer_words;
CREATE INDEX invoices_open_customer_words ON invoices
    USING gin (to_tsvector('simple', coalesce(customer_name, ''))) WHERE status = 'open';
CREATE INDEX invoices_open_balance ON invoices (tenant_id, currency, balance) WHERE status = 'open';
DROP INDEX invoices_customer_name;
CREATE INDEX invoices_open_customer_name ON invoices (tenant_id, lower(customer_name)) WHERE status = 'open';
DROP INDEX invoices_compact_number;
CREATE INDEX invoices_open_compact_number
    ON invoices (tenant_id, upper(regexp_replace(number, '[^0-9A-Za-z]', '', 'g'))) WHERE status = 'open';
DROP INDEX invoices_upper_external_id;
CREATE INDEX invoices_open_upper_external_id ON invoices (tenant_id, upper(external_id)) WHERE status = 'open';
DROP INDEX invoices_upper_number;
CREATE INDEX invoices_open_upper_number ON invoices (tenant_id, upper(number)) WHERE status = 'open';
DROP INDEX invoices_tenant_customer;
CREATE INDEX invoices_tenant_customer_open ON invoices (tenant_id, customer_id, currency, due_date, invoice_id)
    WHERE status = 'open';

ALTER TABLE invoices RESET (fillfactor);
