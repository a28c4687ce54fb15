-- migrate:up
-- An invoice handed to a collection agency (InvoiceHandedToAgency, agency_stop.py): its remaining stages
-- are cancelled (reason with_agency) and it is never planned or fired again; it stays open, so a payment
-- still settles it (the notifier's handed_over notice is cancelled by that payment's stop).
ALTER TABLE invoices ADD COLUMN with_agency_at timestamptz;

-- migrate:down
ALTER TABLE invoices DROP COLUMN with_agency_at;
