"""SWIFT MT940 statements, read with the `mt-940` package (fields, dates, balances, `:61:` lines).

The package reads a file as one run of transactions, so the file is split at each `:20:` first (a
file often holds several statements, one per account or day). Its `:86:` processor is switched off:
`:86:` comes in three dialects — German `?NN` sub-fields (`?20..?29` purpose with `EREF+`/`SVWZ+`,
`?31` IBAN, `?32..?33` name), Dutch `/TAG/value` (`/EREF/`, `/NAME/`, `/REMI/`), and free text — and
its lines are hard-wrapped; `_details` reads all three the same way, joining wrapped lines."""

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import lru_cache
from typing import Any

import mt940
from mt940.options import Options

from dunning.money import MoneyError, quantize, validate_currency
from dunning_reconciliation.statements.collector import collector_paused
from dunning_reconciliation.statements.model import (
    CREDIT,
    DEBIT,
    REVERSAL,
    Statement,
    StatementError,
    StatementLine,
    clean,
    normalise_account,
    with_keys,
)

_OPTIONS = Options(
    applicant_iban=True,
    merge_keeps_values=True,
    reversal_sign=True,
    case_insensitive_marks=True,
    unbounded_details=True,
)
_STATEMENT_START = re.compile(r"^:20:", re.MULTILINE)
_TERMINATOR = re.compile(r"^-[A-Z]{0,3}[ \t]*$", re.MULTILINE)  # a message's end ("-", "-XXX")
_IBAN = re.compile(r"^[A-Z]{2}\d{2}[A-Z0-9]{10,30}$")
_SUBFIELD = re.compile(r"\?(\d{2})")
_SEPA_KEY = re.compile(r"(EREF|KREF|MREF|CRED|DEBT|COAM|OAMT|SVWZ|ABWA|ABWE|IBAN|BIC)\+")
_TAGS = (
    "EREF|REMI|NAME|BENM|ORDP|IBAN|BIC|CSID|MARF|ISDT|RTRN|ADDR|SVCL|PREF|CDTRREFTP|CDTRREF|CD|ISSR|PURP"
    "|ULTC|ULTD|ULTB|ULTA|EXCH|CHGS|TRCD|OCMT|ID|NRTX|BUSP|CNTP|TRTP|USTD|STRD"
)
_TAG = re.compile(rf"/({_TAGS})/")
_RETURN_CODES = {"159", "059"}  # German GVC: a returned transfer (RETOURE), not money received
_WRAP = 64  # a :86: line this long was cut by the 65-character line limit, not ended by the sender


@dataclass(frozen=True)
class _Details:
    remittance: str | None = None
    creditor_reference: str | None = None
    payer_name: str | None = None
    payer_account: str | None = None
    end_to_end_id: str | None = None
    code: str | None = None


def parse(text: str) -> list[Statement]:
    """The statements of an MT940 file (refused whole at the first bad field)."""
    starts = [m.start() for m in _STATEMENT_START.finditer(text)]
    if not starts:
        raise StatementError(":20:", "is missing: not an MT940 statement")
    statements = []
    with collector_paused():
        for n, (start, end) in enumerate(zip(starts, [*starts[1:], len(text)], strict=False), 1):
            first_line = text.count("\n", 0, start) + 1
            statements.append(_statement(text[start:end], n, first_line))
    return statements


def _statement(chunk: str, n: int, first_line: int) -> Statement:
    where = f"statement {n} (line {first_line})"
    chunk = _TERMINATOR.sub("", chunk)
    parsed = mt940.models.Transactions(processors={"post_transaction_details": []}, options=_OPTIONS)
    try:
        parsed.parse(chunk)
    except Exception as exc:  # the package raises plain ValueError/RuntimeError/KeyError on bad fields
        raise StatementError(where, f"cannot be read as MT940 ({exc})") from None
    data = parsed.data
    account = normalise_account(data.get("account_identification"))
    if account is None:
        raise StatementError(f":25: of {where}", "is missing (the account)")
    opening = data.get("final_opening_balance") or data.get("intermediate_opening_balance")
    if opening is None:
        raise StatementError(f":60F: of {where}", "is missing (the opening balance)")
    currency = _currency(opening.amount.currency, f":60F: of {where}")
    closing = data.get("final_closing_balance") or data.get("intermediate_closing_balance")
    ref = "/".join(
        str(v)
        for v in (
            data.get("transaction_reference"),
            data.get("statement_number"),
            data.get("sequence_number"),
            opening.date,
        )
        if v not in (None, "")
    )
    line_numbers = [first_line + i for i, line in enumerate(chunk.splitlines()) if line.startswith(":61:")]
    lines = [
        _line(t.data, f":61: (line {line_numbers[i] if i < len(line_numbers) else '?'})", currency)
        for i, t in enumerate(parsed.transactions)
    ]
    return Statement(
        "mt940",
        ref,
        account,
        currency,
        _exact(opening.amount.amount, currency, f":60F: of {where}"),
        _exact(closing.amount.amount, currency, f":62F: of {where}") if closing is not None else None,
        with_keys(account, lines),
    )


@lru_cache(maxsize=64)
def _valid_currency(code: str) -> str:
    return validate_currency(code)


def _currency(code: str | None, where: str) -> str:
    try:
        return _valid_currency(code or "")
    except MoneyError as exc:
        raise StatementError(where, str(exc)) from None


def _exact(amount: Decimal, currency: str, where: str) -> Decimal:
    if quantize(amount, currency) != amount:
        raise StatementError(where, f"{amount} has more decimals than {currency} has")
    return quantize(amount, currency)


def _line(tx: dict[str, Any], where: str, currency: str) -> StatementLine:
    money = tx.get("amount")
    if money is None:
        raise StatementError(where, "has no amount")
    line_currency = _currency(money.currency or currency, where)
    amount = _exact(abs(money.amount), line_currency, where)
    details = _details(tx.get("transaction_details") or "")
    extra = normalise_account(tx.get("extra_details"))
    mark = (tx.get("status") or "").upper()
    if mark.startswith("R") or details.code in _RETURN_CODES:
        kind, note = REVERSAL, f"reversal ({mark or details.code}): a returned payment, not money received"
    elif mark == "D":
        kind, note = DEBIT, "debit"
    else:
        kind, note = CREDIT, None
    bank_ref = tx.get("bank_reference")
    return StatementLine(
        kind,
        amount,
        line_currency,
        booking_date=_day(tx.get("entry_date") or tx.get("date")),
        value_date=_day(tx.get("date")),
        remittance=details.remittance,
        creditor_reference=details.creditor_reference,
        payer_name=details.payer_name,
        payer_account=details.payer_account or (extra if extra and _IBAN.match(extra) else None),
        end_to_end_id=details.end_to_end_id,
        bank_reference=bank_ref if bank_ref and bank_ref.upper() != "NONREF" else None,
        note=note,
    )


def _day(value: Any) -> date | None:
    """The package's own Date as a plain date."""
    return date(value.year, value.month, value.day) if value is not None else None


def _details(raw: str) -> _Details:
    lines = raw.splitlines()
    if re.match(r"^\d{3}\?\d{2}", raw):
        return _german("".join(lines))
    if _TAG.search(raw):
        return _tagged("".join(lines))
    text = lines[0] if lines else ""
    for previous, line in zip(lines, lines[1:], strict=False):
        text += line if len(previous) >= _WRAP else " " + line
    return _Details(remittance=clean(text))


def _german(text: str) -> _Details:
    """`GVC?00posting?10..?20purpose…?30BIC?31IBAN?32name?33name…`."""
    code = text[:3] if text[:3].isdigit() else None
    fields: dict[str, str] = {}
    parts = _SUBFIELD.split(text)
    for number, value in zip(parts[1::2], parts[2::2], strict=False):
        fields[number] = fields.get(number, "") + value
    purpose = "".join(v for k, v in sorted(fields.items()) if "20" <= k <= "29" or "60" <= k <= "63")
    keyed = dict(zip(*[iter(_SEPA_KEY.split(purpose)[1:])] * 2, strict=False))
    remittance = keyed.get("SVWZ") if keyed else purpose
    return _Details(
        remittance=clean(remittance),
        creditor_reference=_creditor_ref(keyed.get("SVWZ")),
        payer_name=clean(fields.get("32", "") + fields.get("33", "")),
        payer_account=normalise_account(fields.get("31")),
        end_to_end_id=_end_to_end(keyed.get("EREF")),
        code=code,
    )


def _tagged(text: str) -> _Details:
    """`/EREF/…/ORDP//NAME/…/IBAN/…/REMI/…` (also `/CNTP/iban/bic/name/city/`)."""
    parts = _TAG.split(text)
    fields: dict[str, str] = {}
    for tag, value in zip(parts[1::2], parts[2::2], strict=False):
        fields.setdefault(tag, value.strip("/"))
    cntp = fields.get("CNTP", "").split("/") if "CNTP" in fields else []
    remittance = fields.get("REMI") or fields.get("USTD") or ""
    reference = fields.get("CDTRREF")
    if remittance.startswith("USTD//"):  # /REMI/USTD//text (Dutch banks): unstructured
        remittance = remittance[6:]
    elif remittance.startswith("STRD/CUR/"):  # /REMI/STRD/CUR/reference: a structured creditor reference
        reference, remittance = remittance[9:], ""
    reference = reference or _creditor_ref(remittance)
    return _Details(
        remittance=clean(remittance),
        creditor_reference="".join(reference.split()).upper() if reference else None,
        payer_name=clean(fields.get("NAME") or (cntp[2] if len(cntp) > 2 else None)),
        payer_account=normalise_account(fields.get("IBAN") or (cntp[0] if cntp else None)),
        end_to_end_id=_end_to_end(fields.get("EREF")),
    )


def _end_to_end(value: str | None) -> str | None:
    value = clean(value)
    return None if value is None or value.upper() == "NOTPROVIDED" else value


def _creditor_ref(text: str | None) -> str | None:
    """An RF creditor reference standing alone in the text (its check digits are matching's business)."""
    match = re.search(r"\bRF\d{2}[0-9A-Z]{1,21}\b", (text or "").upper())
    return match.group(0) if match else None
