-- migrate:up
-- Issue 10. A customer's country and subdivision (its public holidays: ISO 3166-1 alpha-2 and the
-- ISO 3166-2 code without the country) and the tags and attributes the scheduler's segment rules
-- match on. NULL: not given (the events omit them).
ALTER TABLE customers
    ADD COLUMN country      text CHECK (country ~ '^[A-Z]{2}$'),
    ADD COLUMN subdivision  text CHECK (subdivision IS NULL OR (subdivision ~ '^[A-Z0-9]{1,3}$' AND country IS NOT NULL)),
    ADD COLUMN tags         text[] CHECK (cardinality(tags) <= 20),
    ADD COLUMN attributes   jsonb CHECK (jsonb_typeof(attributes) = 'object');

-- The late fees and interest the scheduler claimed on an invoice (LateChargesAssessed: the totals of
-- the latest assessment) and their waiver (LateChargesWaived). Never part of amount_due or balance.
CREATE TABLE invoice_charges (
    invoice_id        text COLLATE "C" PRIMARY KEY REFERENCES invoices (id),
    tenant_id         text        NOT NULL,
    currency          text        NOT NULL,
    late_fees         numeric     NOT NULL DEFAULT 0,
    interest          numeric     NOT NULL DEFAULT 0,
    last_assessed_at  timestamptz,
    waived_late_fees  numeric,
    waived_interest   numeric,
    waived_at         timestamptz,
    waived_by         text,
    waived_reason     text
);

-- migrate:down
DROP TABLE invoice_charges;
ALTER TABLE customers DROP COLUMN attributes, DROP COLUMN tags, DROP COLUMN subdivision, DROP COLUMN country;
