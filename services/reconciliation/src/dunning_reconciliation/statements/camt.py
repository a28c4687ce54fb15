"""ISO 20022 CAMT.053 (bank-to-customer statement), versions 001.02 to 001.13, read without regard
to the namespace prefix. No DTD is accepted (so no entity can be declared), the document must be
UTF-8 as ISO 20022 requires, and the parser is the standard library's C ElementTree on expat >= 2.4.1,
which resolves no external entity and caps entity amplification (Python's "XML vulnerabilities"
table): no XXE, no billion laughs. defusedxml gives the same refusals through a pure-Python parser,
three times slower on a 20,000-line statement; this is its `forbid_dtd` check, on the bytes.

Each `Ntry` is a booking; a batch entry (`Btch`, several `TxDtls`) gives one line per `TxDtls`, each
with its own amount. An entry with one `TxDtls` (or none) is one line of the amount booked on the
account (the entry's: a transaction's own amount may be in the ordered currency). Errors name the
element by its path, e.g. `Stmt[1]/Ntry[3]/Amt`."""

import re
from collections.abc import Callable
from contextlib import suppress
from datetime import date
from decimal import Decimal
from functools import lru_cache
from xml.etree.ElementTree import Element, ParseError, fromstring

from dunning.money import MoneyError, parse_amount, validate_currency
from dunning_reconciliation.statements.collector import collector_paused
from dunning_reconciliation.statements.model import (
    CREDIT,
    DEBIT,
    NOT_BOOKED,
    REVERSAL,
    Statement,
    StatementError,
    StatementLine,
    clean,
    normalise_account,
    with_keys,
)

_NAMESPACE = re.compile(r"^urn:iso:std:iso:20022:tech:xsd:camt\.053\.001\.(\d{2})$")
_NOT_PROVIDED = "NOTPROVIDED"


_DTD = re.compile(rb"<!(?:DOCTYPE|ENTITY)")
_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_ASCII_BASED = {"utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin-1", "latin1"}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


class _Paths(dict[str, tuple[str, ...]]):
    """A document's paths as steps of tags in its namespace: `q["A/B"]` is (`{ns}A`, `{ns}B`), made
    once per namespace and path. A find of one plain tag stays in ElementTree's C code (a path goes
    through its Python path engine), and a dict lookup is what each of a statement's some 400,000
    finds costs here (the statements bench)."""

    def __init__(self, namespace: str) -> None:
        super().__init__()
        self.namespace = namespace

    def __missing__(self, path: str) -> tuple[str, ...]:
        ns = self.namespace
        steps = tuple(f"{{{ns}}}{step}" if ns else step for step in path.split("/"))
        self[path] = steps
        return steps


@lru_cache(maxsize=32)
def _paths(namespace: str) -> _Paths:
    return _Paths(namespace)


def _kids(el: Element | None, tag: tuple[str, ...]) -> list[Element]:
    return [] if el is None else el.findall(tag[0])


def _find(el: Element | None, steps: tuple[str, ...]) -> Element | None:
    for step in steps:
        if el is None:
            return None
        el = el.find(step)
    return el


def _text(el: Element | None, steps: tuple[str, ...]) -> str | None:
    """The element's text at `steps`, whitespace collapsed (model.clean); None when absent or blank."""
    for step in steps:
        if el is None:
            return None
        el = el.find(step)
    if el is None or not el.text:
        return None
    return " ".join(el.text.split()) or None


@lru_cache(maxsize=1024)
def _day(value: str) -> date:
    """A `Dt`'s (or a `DtTm`'s date part) date; ValueError if it is none (a statement's lines share a few)."""
    return date.fromisoformat(value[:10])


@lru_cache(maxsize=64)
def _currency(code: str) -> str:
    return validate_currency(code)


def _guard(data: bytes) -> None:
    """Refuse what could declare entities: a DTD, or an encoding in which the check cannot read it."""
    if data[:2] in (b"\xfe\xff", b"\xff\xfe") or b"\x00" in data[:4]:
        raise StatementError("file", "must be UTF-8 (ISO 20022 messages are)")
    declared = _ENCODING.match(data.removeprefix(b"\xef\xbb\xbf"))
    if declared and declared.group(1).decode().lower() not in _ASCII_BASED:
        raise StatementError("file", f"encoding {declared.group(1).decode()!r} is not accepted: must be UTF-8")
    if _DTD.search(data):
        raise StatementError("file", "a DTD or entity declaration is not accepted")


def _required(el: Element, q: _Paths, path: str, where: str) -> str:
    value = _text(el, q[path])
    if value is None:
        raise StatementError(f"{where}/{path}", "is missing")
    return value


def _date(el: Element | None, q: _Paths, path: str, where: str) -> date | None:
    """A `Dt` or `DtTm` under `path` (its date part)."""
    el = _find(el, q[path])
    value = _text(el, q["Dt"]) or _text(el, q["DtTm"])
    if value is None:
        return None
    try:
        return _day(value)
    except ValueError:
        raise StatementError(f"{where}/{path}", f"{value!r} is not a date") from None


def _money(el: Element | None, where: str) -> tuple[Decimal, str]:
    """An `Amt Ccy="…"` element: the amount (exact, at most the currency's decimals) and currency."""
    if el is None or not (el.text or "").strip():
        raise StatementError(where, "is missing")
    currency = el.get("Ccy") or ""
    try:
        _currency(currency)
    except MoneyError as exc:
        raise StatementError(f"{where}/@Ccy", str(exc)) from None
    try:
        return parse_amount(el.text or "", currency, allow_zero=True), currency
    except MoneyError as exc:
        raise StatementError(where, f"{(el.text or '').strip()!r}: {exc}") from None


def parse(data: bytes, first: Callable[[Statement], object] | None = None, first_lines: int = 0) -> list[Statement]:
    """The statements of a CAMT.053 document (refused whole at the first bad element). `first`: called
    with the first statement's first `first_lines` lines, as a Statement, as soon as they are read,
    while the rest is (a caller may start on them; their keys are as far as these lines tell, see
    statements_import)."""
    _guard(data)
    with collector_paused():
        try:
            root = fromstring(data)
        except ParseError as exc:
            raise StatementError("file", f"not well-formed XML ({exc})") from None
        namespace = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
        # the paths below are local names, qualified with the document's namespace
        return _document(root, namespace, _paths(namespace), first, first_lines)


def _document(
    root: Element, namespace: str, q: _Paths, first: Callable[[Statement], object] | None, first_lines: int
) -> list[Statement]:
    if _local(root.tag) != "Document" or (namespace and not _NAMESPACE.match(namespace)):
        raise StatementError(
            "Document", f"not a CAMT.053 statement (root {_local(root.tag)!r}, namespace {namespace!r})"
        )
    body = _find(root, q["BkToCstmrStmt"])
    if body is None:
        raise StatementError("Document/BkToCstmrStmt", "is missing")
    statements = _kids(body, q["Stmt"])
    if not statements:
        raise StatementError("BkToCstmrStmt/Stmt", "is missing: the document holds no statement")
    return [
        _statement(stmt, q, f"Stmt[{i}]", first if i == 1 else None, first_lines)
        for i, stmt in enumerate(statements, 1)
    ]


def _statement(
    stmt: Element, q: _Paths, where: str, first: Callable[[Statement], object] | None = None, first_lines: int = 0
) -> Statement:
    ref = _required(stmt, q, "Id", where)
    account = normalise_account(_text(stmt, q["Acct/Id/IBAN"]) or _text(stmt, q["Acct/Id/Othr/Id"]))
    if account is None:
        raise StatementError(f"{where}/Acct/Id", "is missing (neither IBAN nor Othr/Id)")
    opening = closing = None
    currencies = []
    for i, bal in enumerate(_kids(stmt, q["Bal"]), 1):
        code = _text(bal, q["Tp/CdOrPrtry/Cd"]) or _text(bal, q["Tp/CdOrPrtry/Prtry"])
        amount, currency = _money(_find(bal, q["Amt"]), f"{where}/Bal[{i}]/Amt")
        currencies.append(currency)
        signed = -amount if _text(bal, q["CdtDbtInd"]) == "DBIT" else amount  # no indicator: credit
        if code in ("OPBD", "PRCD") and opening is None:
            opening = signed
        elif code == "CLBD":
            closing = signed
    lines: list[StatementLine] = []
    for i, entry in enumerate(_kids(stmt, q["Ntry"]), 1):
        lines.extend(_entry(entry, q, f"{where}/Ntry[{i}]"))
        if first is not None and len(lines) >= first_lines:
            with suppress(StatementError):  # refused in its place below, once the whole statement is read
                head = lines[:first_lines]
                currency = _statement_currency(stmt, q, where, currencies, head)
                first(Statement("camt053", ref, account, currency, opening, closing, with_keys(account, head)))
            first = None
    currency = _statement_currency(stmt, q, where, currencies, lines)
    return Statement("camt053", ref, account, currency, opening, closing, with_keys(account, lines))


def _statement_currency(stmt: Element, q: _Paths, where: str, currencies: list[str], lines: list[StatementLine]) -> str:
    named = _text(stmt, q["Acct/Ccy"]) or next(iter(currencies), None) or next((ln.currency for ln in lines), None)
    if named is None:
        raise StatementError(f"{where}/Acct/Ccy", "is missing, and no balance or entry names a currency")
    try:
        return _currency(named)
    except MoneyError as exc:
        raise StatementError(f"{where}/Acct/Ccy", str(exc)) from None


def _entry(entry: Element, q: _Paths, where: str) -> list[StatementLine]:
    amount, currency = _money(_find(entry, q["Amt"]), f"{where}/Amt")
    indicator = _required(entry, q, "CdtDbtInd", where)
    if indicator not in ("CRDT", "DBIT"):
        raise StatementError(f"{where}/CdtDbtInd", f"{indicator!r} is neither CRDT nor DBIT")
    status = _text(entry, q["Sts/Cd"]) or _text(entry, q["Sts"]) or "BOOK"
    reversal = (_text(entry, q["RvslInd"]) or "").lower() in ("true", "1")
    booked, valued = _date(entry, q, "BookgDt", where), _date(entry, q, "ValDt", where)
    entry_ref = _text(entry, q["AcctSvcrRef"]) or _text(entry, q["NtryRef"])
    tx_details = q["TxDtls"]
    details = [tx for d in _kids(entry, q["NtryDtls"]) for tx in _kids(d, tx_details)]
    if not details:
        kind, note = _kind(indicator, reversal, status)
        info = _text(entry, q["AddtlNtryInf"])
        return [
            StatementLine(
                kind,
                amount,
                currency,
                booking_date=booked,
                value_date=valued,
                remittance=info,
                bank_reference=entry_ref,
                note=note,
            )
        ]
    lines = []
    batch = len(details) > 1
    for i, tx in enumerate(details, 1):
        tx_amount, tx_currency = amount, currency  # one transaction: what was booked on the account
        if batch:
            at = f"{where}/NtryDtls/TxDtls[{i}]"
            tx_amount_el = _find(tx, q["AmtDtls/TxAmt/Amt"])
            if tx_amount_el is None:  # v04+: TxDtls/Amt
                tx_amount_el = _find(tx, q["Amt"])
            if tx_amount_el is None:
                raise StatementError(f"{at}/AmtDtls/TxAmt/Amt", "is missing in a batch of several transactions")
            tx_amount, tx_currency = _money(tx_amount_el, f"{at}/Amt")
        kind, note = _kind(_text(tx, q["CdtDbtInd"]) or indicator, reversal, status)
        # the parents of several fields found once (each _find walks from tx)
        refs, parties, rmt = _find(tx, q["Refs"]), _find(tx, q["RltdPties"]), _find(tx, q["RmtInf"])
        ref = _text(refs, q["AcctSvcrRef"]) or (f"{entry_ref}/{i}" if entry_ref and batch else entry_ref)
        account = _find(parties, q["DbtrAcct/Id"])
        lines.append(
            StatementLine(
                kind,
                tx_amount,
                tx_currency,
                remittance=_remittance(rmt, q) or _text(tx, q["AddtlTxInf"]) or _text(entry, q["AddtlNtryInf"]),
                creditor_reference=_creditor_reference(rmt, q),
                payer_name=_party(parties, q, "Dbtr"),
                payer_account=normalise_account(_text(account, q["IBAN"]) or _text(account, q["Othr/Id"])),
                end_to_end_id=_end_to_end(refs, q),
                bank_reference=ref,
                note=note,
                booking_date=booked,
                value_date=valued,
            )
        )
    return lines


def _kind(indicator: str, reversal: bool, status: str) -> tuple[str, str | None]:
    if status not in ("BOOK",):
        return NOT_BOOKED, f"entry status {status}: not booked"
    if reversal:
        return REVERSAL, "reversal (RvslInd): a returned payment, not money received"
    if indicator == "DBIT":
        return DEBIT, "debit"
    return CREDIT, None


def _party(parties: Element | None, q: _Paths, role: str) -> str | None:
    """The name of a party of a transaction's `RltdPties`."""
    # v02-v07: RltdPties/Dbtr/Nm; v08+: RltdPties/Dbtr/Pty/Nm
    party = _find(parties, q[role])
    return _text(party, q["Nm"]) or _text(party, q["Pty/Nm"])


def _end_to_end(refs: Element | None, q: _Paths) -> str | None:
    """A transaction's `Refs/EndToEndId` (None when not provided)."""
    value = _text(refs, q["EndToEndId"])
    return None if value is None or value.upper() == _NOT_PROVIDED else value


def _remittance(info: Element | None, q: _Paths) -> str | None:
    """The unstructured text of a transaction's `RmtInf`, then referred document numbers and
    additional remittance text of the structured part (an invoice number often sits there), joined
    by spaces."""
    if info is None:
        return None
    parts = [clean(u.text) for u in _kids(info, q["Ustrd"])]
    for strd in _kids(info, q["Strd"]):
        parts += [_text(doc, q["Nb"]) for doc in _kids(strd, q["RfrdDocInf"])]
        parts += [clean(a.text) for a in _kids(strd, q["AddtlRmtInf"])]
    return clean(" ".join(p for p in parts if p))


def _creditor_reference(info: Element | None, q: _Paths) -> str | None:
    """The creditor reference of a transaction's `RmtInf` (structured part)."""
    for strd in _kids(info, q["Strd"]):
        ref = _text(strd, q["CdtrRefInf/Ref"])
        if ref:
            return "".join(ref.split()).upper()
    return None
