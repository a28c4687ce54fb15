-- migrate:up
-- Invoice changes (issue 8): an invoice's version and its closing (void, written off), credit notes
-- applied to balances, the write-offs kept for reporting, and payments refused by a closed invoice.

-- The invoice version reconciliation last applied (InvoiceIssued is 1; InvoiceUpdated, InvoiceVoided
-- and InvoiceWrittenOff carry theirs): an event whose version is not newer is ignored.
ALTER TABLE invoices ADD COLUMN version integer NOT NULL DEFAULT 1;
-- A void invoice: when and why (a written-off one has its row in write_offs).
ALTER TABLE invoices ADD COLUMN voided_at timestamptz;
ALTER TABLE invoices ADD COLUMN void_reason text;
ALTER TABLE invoices DROP CONSTRAINT invoices_status_check;
ALTER TABLE invoices ADD CONSTRAINT invoices_status_check
    CHECK (status IN ('open', 'paid', 'void', 'written_off'));

-- A payment for a void or written-off invoice is recorded, never applied.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('applied', 'unmatched', 'rejected_currency_mismatch', 'invoice_closed'));

-- Credit notes from the accounting system (POST /v1/credit-notes), applied to the balance as a
-- payment is. `reference` is the accounting system's credit note number: the idempotency key.
CREATE TABLE credit_notes (
    credit_note_id     text PRIMARY KEY,
    tenant_id          text        NOT NULL,
    invoice_id         text        NOT NULL REFERENCES invoices (invoice_id),
    -- The invoice's external id when the credit note was applied (as CreditNoteIssued carries it).
    invoice_external_id text       NOT NULL,
    reference          text        NOT NULL,
    reason             text        NOT NULL,
    currency           text        NOT NULL,
    amount             numeric     NOT NULL,
    amount_applied     numeric     NOT NULL,
    unapplied_amount   numeric     NOT NULL,
    balance_remaining  numeric     NOT NULL,
    settled            boolean     NOT NULL,
    -- A digest of the request (idempotency) and the first answer given.
    fingerprint        text        NOT NULL,
    response           jsonb,
    acknowledged_at    timestamptz NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, reference)
);
CREATE INDEX credit_notes_tenant_id ON credit_notes (tenant_id, credit_note_id);
CREATE INDEX credit_notes_tenant_invoice ON credit_notes (tenant_id, invoice_id, credit_note_id);

-- One row per written-off invoice: `amount` is the balance reconciliation held when it applied the
-- InvoiceWrittenOff, `amount_reported` what invoice-ingest held when it accepted the write-off.
CREATE TABLE write_offs (
    invoice_id       text PRIMARY KEY REFERENCES invoices (invoice_id),
    tenant_id        text        NOT NULL,
    external_id      text        NOT NULL,
    number           text        NOT NULL,
    currency         text        NOT NULL,
    amount           numeric     NOT NULL,
    amount_reported  numeric     NOT NULL,
    reason           text        NOT NULL,
    written_off_at   timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX write_offs_tenant_time ON write_offs (tenant_id, written_off_at, invoice_id);

-- migrate:down
DROP TABLE write_offs;
DROP TABLE credit_notes;
-- The old schema has no status for a payment refused by a closed invoice: those rows go.
DELETE FROM payments WHERE status = 'invoice_closed';
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('applied', 'unmatched', 'rejected_currency_mismatch'));
UPDATE invoices SET status = 'paid' WHERE status IN ('void', 'written_off');
ALTER TABLE invoices DROP CONSTRAINT invoices_status_check;
ALTER TABLE invoices ADD CONSTRAINT invoices_status_check CHECK (status IN ('open', 'paid'));
ALTER TABLE invoices DROP COLUMN void_reason;
ALTER TABLE invoices DROP COLUMN voided_at;
ALTER TABLE invoices DROP COLUMN version;
