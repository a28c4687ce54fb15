-- migrate:up
-- Bank statements (issue 11): each statement imported (CAMT.053 or MT940), and each of its lines
-- with what became of it. A file may hold several statements (one per account or day): one row each.

CREATE TABLE statements (
    statement_id     text PRIMARY KEY,             -- stm_…
    tenant_id        text        NOT NULL,
    format           text        NOT NULL CHECK (format IN ('camt053', 'mt940')),
    filename         text,
    file_sha256      text        NOT NULL,         -- the uploaded file's digest: the same file twice is a duplicate
    file_position    integer     NOT NULL,         -- its place among the file's statements (1, 2, …)
    account          text        NOT NULL,         -- the statement's account (IBAN or other id, no spaces)
    bank_statement_id text       NOT NULL,         -- CAMT Stmt/Id; MT940 :20:/:28C:/opening date
    currency         text        NOT NULL,
    opening_balance  numeric,
    closing_balance  numeric,
    -- importing: chunks still to go (a retry resumes after lines_done); imported: all lines done.
    status           text        NOT NULL DEFAULT 'importing' CHECK (status IN ('importing', 'imported')),
    lines            integer     NOT NULL,
    credits          integer     NOT NULL,
    lines_done       integer     NOT NULL DEFAULT 0,
    matched          integer     NOT NULL DEFAULT 0,
    unmatched        integer     NOT NULL DEFAULT 0,
    skipped          integer     NOT NULL DEFAULT 0,
    duplicates       integer     NOT NULL DEFAULT 0,
    imported_at      timestamptz NOT NULL,
    completed_at     timestamptz,
    UNIQUE (tenant_id, account, bank_statement_id)
);
CREATE INDEX statements_by_file ON statements (tenant_id, file_sha256);
CREATE INDEX statements_by_tenant ON statements (tenant_id, statement_id);

-- A line key seen once per tenant: the same line in an overlapping statement is a duplicate.
CREATE TABLE statement_line_keys (
    tenant_id     text NOT NULL,
    line_key      text NOT NULL,
    statement_id  text NOT NULL REFERENCES statements (statement_id),
    PRIMARY KEY (tenant_id, line_key)
);

CREATE TABLE statement_lines (
    statement_id       text    NOT NULL REFERENCES statements (statement_id),
    position           integer NOT NULL,           -- 1, 2, … in the statement's order
    tenant_id          text    NOT NULL,
    line_key           text    NOT NULL,
    kind               text    NOT NULL CHECK (kind IN ('credit', 'debit', 'reversal', 'not_booked')),
    -- the payment's status (applied, partially_allocated, unmatched, …), or skipped / duplicate
    status             text    NOT NULL,
    amount             numeric NOT NULL,
    currency           text    NOT NULL,
    booking_date       date,
    value_date         date,
    payer_name         text,
    payer_account      text,
    remittance         text,
    creditor_reference text,
    end_to_end_id      text,
    bank_reference     text,
    note               text,
    payment_id         text,
    invoice_ids        text[]  NOT NULL DEFAULT '{}',
    PRIMARY KEY (statement_id, position)
);

-- migrate:down
DROP TABLE statement_lines;
DROP TABLE statement_line_keys;
DROP TABLE statements;
