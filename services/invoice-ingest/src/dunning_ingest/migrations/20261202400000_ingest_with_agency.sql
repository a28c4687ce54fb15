-- migrate:up
-- An invoice handed to a collection agency (the notifier's InvoiceHandedToAgency, collections_handlers.py):
-- shown with status `with_agency` while it is open (a payment still settles it: `paid` then).
ALTER TABLE invoices
    ADD COLUMN with_agency_at timestamptz,
    ADD COLUMN agency_case_id text,
    ADD COLUMN agency_name text;

-- migrate:down
ALTER TABLE invoices DROP COLUMN agency_name, DROP COLUMN agency_case_id, DROP COLUMN with_agency_at;
