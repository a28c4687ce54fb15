-- migrate:up
-- The money the scheduler has applied to each invoice (PaymentReceived, CreditNoteIssued), one row
-- per payment or credit note, written by the statement that applies it (repository.invoices
-- ._APPLY_PAYMENT). A promise counts from here the money acknowledged at or after it was made and
-- by its deadline, whichever of the two topics the scheduler consumed first: a payment applied
-- before its PromiseMade still keeps the promise. `amount` is the amount applied to the invoice.
CREATE TABLE money_applied (
    invoice_id      text           NOT NULL,
    money_id        text           NOT NULL,   -- the payment's id, or the credit note's
    acknowledged_at timestamptz    NOT NULL,
    amount          numeric(20, 4) NOT NULL,
    PRIMARY KEY (invoice_id, money_id)
);

-- migrate:down
DROP TABLE money_applied;
