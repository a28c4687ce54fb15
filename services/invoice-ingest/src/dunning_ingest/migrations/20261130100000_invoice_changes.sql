-- migrate:up
-- Invoice changes (issue 8): a version per invoice (1 at creation, +1 per update, void or
-- write-off), the void and write-off facts on the invoice, the change history, credit notes, and
-- the re-planned times in the stage history.

ALTER TABLE invoices
    ADD COLUMN version             integer     NOT NULL DEFAULT 1,
    ADD COLUMN updated_at          timestamptz,
    ADD COLUMN closed_reason       text,         -- the reason given to void or write off
    ADD COLUMN voided_at           timestamptz,
    ADD COLUMN written_off_at      timestamptz,
    ADD COLUMN written_off_amount  numeric;       -- the balance held when the write-off was accepted
ALTER TABLE invoices DROP CONSTRAINT invoices_status_check;
ALTER TABLE invoices ADD CONSTRAINT invoices_status_check
    CHECK (status IN ('open', 'paid', 'void', 'written_off'));
-- The balance is now amount_due minus everything applied (payments and credit notes), whatever
-- order they arrive in: the latest-payment marker is no longer needed.
ALTER TABLE invoices DROP COLUMN balance_as_of, DROP COLUMN balance_payment_id;

-- What happened to an invoice after its creation, one row per version: updated (changes:
-- [{field, previous, value}]), voided, written_off (amount). Written in the transaction of the change.
CREATE TABLE invoice_changes (
    invoice_id  text COLLATE "C" NOT NULL REFERENCES invoices (id),
    version     integer     NOT NULL,
    tenant_id   text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('updated', 'voided', 'written_off')),
    at          timestamptz NOT NULL,
    changes     jsonb,
    reason      text,
    amount      numeric,
    event_id    uuid        NOT NULL,             -- the event published for it
    PRIMARY KEY (invoice_id, version)
);

-- Credit notes as CreditNoteIssued reports them (reconciliation issues them).
CREATE TABLE credit_notes (
    credit_note_id     text COLLATE "C" PRIMARY KEY,  -- cn_... from reconciliation
    invoice_id         text COLLATE "C" NOT NULL REFERENCES invoices (id),
    tenant_id          text        NOT NULL,
    reference          text        NOT NULL,
    reason             text        NOT NULL,
    currency           text        NOT NULL,
    amount             numeric     NOT NULL,
    amount_applied     numeric     NOT NULL,
    balance_remaining  numeric     NOT NULL,
    settled            boolean     NOT NULL,
    acknowledged_at    timestamptz NOT NULL,
    recorded_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX credit_notes_invoice ON credit_notes (invoice_id, acknowledged_at);

-- A re-planned stage's history entry carries its previous and new time.
ALTER TABLE stage_history
    ADD COLUMN previous_scheduled_at  timestamptz,
    ADD COLUMN scheduled_at           timestamptz;

-- migrate:down
ALTER TABLE stage_history DROP COLUMN previous_scheduled_at, DROP COLUMN scheduled_at;
DROP TABLE credit_notes;
DROP TABLE invoice_changes;
ALTER TABLE invoices ADD COLUMN balance_as_of timestamptz, ADD COLUMN balance_payment_id text;
ALTER TABLE invoices DROP CONSTRAINT invoices_status_check;
ALTER TABLE invoices ADD CONSTRAINT invoices_status_check CHECK (status IN ('open', 'paid', 'void'));
ALTER TABLE invoices
    DROP COLUMN version, DROP COLUMN updated_at, DROP COLUMN closed_reason, DROP COLUMN voided_at,
    DROP COLUMN written_off_at, DROP COLUMN written_off_amount;
