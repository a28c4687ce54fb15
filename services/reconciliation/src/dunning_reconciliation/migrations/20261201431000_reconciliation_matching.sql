-- migrate:up
-- Matching payments that name no invoice by key (issue 11): the customer's name as InvoiceIssued
-- gives it (a payer's name may equal it), and the indexes the batch candidate query
-- (repository/matching.py) reads open invoices by: a remittance token equal to the number or the
-- external id (upper case), a creditor reference's body equal to the number's alphanumerics, the
-- customer's name (lower case), and an open balance equal to a payment's amount.

ALTER TABLE invoices ADD COLUMN customer_name text;

CREATE INDEX invoices_open_upper_number ON invoices (tenant_id, upper(number)) WHERE status = 'open';
CREATE INDEX invoices_open_upper_external_id ON invoices (tenant_id, upper(external_id)) WHERE status = 'open';
CREATE INDEX invoices_open_compact_number
    ON invoices (tenant_id, upper(regexp_replace(number, '[^0-9A-Za-z]', '', 'g'))) WHERE status = 'open';
CREATE INDEX invoices_open_customer_name ON invoices (tenant_id, lower(customer_name)) WHERE status = 'open';
CREATE INDEX invoices_open_balance ON invoices (tenant_id, currency, balance) WHERE status = 'open';
-- The words of the customer's name: a queued payment's suggestions include the open invoices of
-- customers whose name shares a word with the payer's.
CREATE INDEX invoices_open_customer_words ON invoices
    USING gin (to_tsvector('simple', coalesce(customer_name, ''))) WHERE status = 'open';

-- Manual allocations (POST /v1/payments/{id}/allocations) sent with an Idempotency-Key: the request's
-- digest and the first answer, stored in the transaction that allocated.
CREATE TABLE allocation_requests (
    tenant_id        text        NOT NULL,
    idempotency_key  text        NOT NULL,
    payment_id       text        NOT NULL REFERENCES payments (payment_id),
    fingerprint      text        NOT NULL,
    status           integer     NOT NULL,
    response         jsonb       NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, idempotency_key)
);

-- migrate:down
DROP TABLE allocation_requests;
DROP INDEX invoices_open_customer_words;
DROP INDEX invoices_open_balance;
DROP INDEX invoices_open_customer_name;
DROP INDEX invoices_open_compact_number;
DROP INDEX invoices_open_upper_external_id;
DROP INDEX invoices_open_upper_number;
ALTER TABLE invoices DROP COLUMN customer_name;
