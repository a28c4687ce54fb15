"""API models of bank statements: an import's answer, a statement, and its lines (what each line
became: a payment matched or waiting in the queue, or skipped, or a duplicate of a line seen before)."""

from typing import Literal

from pydantic import BaseModel, Field

StatementFormat = Literal["camt053", "mt940"]


class StatementLineOut(BaseModel):
    statement_id: str
    position: int = Field(description="1, 2, … in the statement's order (each transaction of a batch is a line)")
    line_key: str = Field(
        description="Identifies the line across statements: an overlapping file's copy is a duplicate"
    )
    kind: Literal["credit", "debit", "reversal", "not_booked"]
    status: str = Field(
        description="The payment's status (`applied`, `partially_allocated`, `unmatched`, …) for a credit; "
        "`skipped` (a debit, a reversal, an entry not booked) or `duplicate` (seen in an earlier statement)"
    )
    amount: str
    currency: str
    booking_date: str | None
    value_date: str | None
    payer_name: str | None
    payer_account: str | None = Field(description="The payer's IBAN (or account id), upper case, no spaces")
    remittance: str | None
    creditor_reference: str | None
    end_to_end_id: str | None
    bank_reference: str | None
    note: str | None = Field(description="Why the line was skipped")
    payment_id: str | None
    invoice_ids: list[str] = Field(description="The invoices the payment was allocated to")


class _Counts(BaseModel):
    lines: int
    credits: int
    matched: int = Field(description="Credits allocated (wholly or in part) to invoices")
    unmatched: int = Field(description="Credits waiting in the unmatched queue (GET /v1/payments?status=unmatched)")
    skipped: int = Field(description="Debits, reversals and entries not booked")
    duplicates: int = Field(description="Lines seen in an earlier statement")


class StatementOut(_Counts):
    statement_id: str
    format: StatementFormat
    filename: str | None
    account: str
    bank_statement_id: str = Field(description="The bank's id: CAMT `Stmt/Id`; MT940 `:20:/:28C:/opening date`")
    currency: str
    opening_balance: str | None
    closing_balance: str | None
    status: Literal["importing", "imported"]
    duplicate: bool = Field(description="Imported before: this answer is the first import's")
    imported_at: str
    completed_at: str | None


class StatementImportOut(_Counts):
    """The totals over the file's statements, each statement, and the first 1,000 lines' outcomes."""

    duplicate: bool = Field(description="The same file (or all its statements) was imported before: nothing changed")
    filename: str | None
    format: StatementFormat | None
    file_sha256: str | None
    statements: list[StatementOut]
    outcomes: list[StatementLineOut]
    outcomes_truncated: bool = Field(description="More lines than shown: page them with GET /v1/statements/{id}/lines")
