"""What a bank statement is once parsed, whatever its format: the statement (account, the bank's id,
currency, balances) and its lines. Only a booked credit becomes a payment; debits, reversals and
entries not yet booked are kept as skipped lines with a note, so a statement's counts add up.

A line's `key` identifies it across files: a statement and a later one that overlaps it (a daily and
a monthly statement) name a line the same way, so the import skips the line it has seen."""

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

CREDIT, DEBIT, REVERSAL, NOT_BOOKED = "credit", "debit", "reversal", "not_booked"


class StatementError(ValueError):
    """Bad input: the element (CAMT path) or line (MT940) at fault, and what is wrong with it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class StatementLine:
    kind: str  # credit | debit | reversal | not_booked: only a credit is a payment
    amount: Decimal  # positive, quantized to the currency's exponent
    currency: str
    booking_date: date | None = None
    value_date: date | None = None
    remittance: str | None = None  # unstructured remittance text, joined
    creditor_reference: str | None = None  # structured creditor reference (RF… or national), spaces removed
    payer_name: str | None = None
    payer_account: str | None = None  # IBAN (or other account id), upper case, no spaces
    end_to_end_id: str | None = None
    bank_reference: str | None = None  # the bank's own reference of the line, when it gives one
    note: str | None = None  # why the line is skipped
    key: str = ""  # set by with_keys

    @property
    def is_credit(self) -> bool:
        return self.kind == CREDIT


@dataclass(frozen=True)
class Statement:
    format: str  # camt053 | mt940
    statement_ref: str  # the bank's id of the statement (CAMT Stmt/Id; MT940 :20:/:28C:/opening date)
    account: str
    currency: str
    opening_balance: Decimal | None = None
    closing_balance: Decimal | None = None
    lines: tuple[StatementLine, ...] = field(default_factory=tuple)

    @property
    def credits(self) -> tuple[StatementLine, ...]:
        return tuple(line for line in self.lines if line.is_credit)


def normalise_account(value: str | None) -> str | None:
    """An IBAN or account id as stored: upper case, no spaces (None when empty)."""
    if not value:
        return None
    text = "".join(value.split()).upper()
    return text or None


def clean(value: str | None) -> str | None:
    """Whitespace collapsed; None when nothing is left."""
    if value is None:
        return None
    text = " ".join(value.split())
    return text or None


def _keyed(line: StatementLine, key: str) -> StatementLine:
    """`dataclasses.replace(line, key=key)`, a sixth of its cost (a plain dataclass: its fields are
    its `__dict__`; the statements bench makes one per line)."""
    keyed = object.__new__(StatementLine)
    keyed.__dict__.update(line.__dict__, key=key)
    return keyed


def with_keys(account: str, lines: list[StatementLine]) -> tuple[StatementLine, ...]:
    """Give each line its key: the account and the bank's reference of the line when there is one,
    else a digest of what the line says plus its occurrence among identical lines of the statement
    (two equal transfers on one day stay two lines, and keep their keys in an overlapping file)."""
    seen: Counter[str] = Counter()
    keyed = []
    for line in lines:
        if line.bank_reference:
            key = f"{account}:{line.bank_reference}"
        else:
            content = "\x1f".join(
                str(v)
                for v in (
                    line.kind,
                    line.booking_date,
                    line.value_date,
                    line.amount,
                    line.currency,
                    line.end_to_end_id,
                    line.payer_account,
                    line.payer_name,
                    line.remittance,
                    line.creditor_reference,
                )
            )
            seen[content] += 1
            digest = hashlib.sha256(f"{content}\x1f{seen[content]}".encode()).hexdigest()[:32]
            key = f"{account}:#{digest}"
        keyed.append(_keyed(line, key))
    duplicates = [k for k, n in Counter(line.key for line in keyed).items() if n > 1]
    if duplicates:  # a bank reference used twice in one statement: tell them apart by occurrence
        counts: Counter[str] = Counter()
        unique = []
        for line in keyed:
            if line.key in duplicates:
                counts[line.key] += 1
                line = _keyed(line, f"{line.key}/{counts[line.key]}")
            unique.append(line)
        keyed = unique
    return tuple(keyed)
