"""Bank statements as a bank writes them, for the end-to-end tests, the demo and the bench: an ISO
20022 CAMT.053 (001.02 shape: one `Ntry` per credit with one `TxDtls`, or a batch `Btch` of several)
and a SWIFT MT940 with German GVC `:86:` sub-fields (`?20` EREF+, `?21..?29` SVWZ+ remittance,
`?31` the payer's IBAN, `?32` its name), the two shapes the reconciliation import reads.

Only credit lines matter to the import; a debit is written too when asked, to be skipped."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from xml.sax.saxutils import escape

BANK_ACCOUNT = "DE89370400440532013000"  # the tenant's own account (a well-known valid example IBAN)


@dataclass(frozen=True)
class Line:
    """One credit (or, `debit=True`, a debit) on the statement."""

    amount: Decimal
    remittance: str = ""
    payer_name: str = ""
    payer_account: str = ""
    creditor_reference: str = ""  # an ISO 11649 RF reference, as structured remittance
    end_to_end_id: str = "NOTPROVIDED"
    bank_reference: str = ""
    debit: bool = False


def _amount(value: Decimal) -> str:
    return f"{value:.2f}"


def _tx(line: Line, currency: str) -> str:
    parties = ""
    if line.payer_name or line.payer_account:
        parties = "<RltdPties>"
        if line.payer_name:
            parties += f"<Dbtr><Nm>{escape(line.payer_name)}</Nm></Dbtr>"
        if line.payer_account:
            parties += f"<DbtrAcct><Id><IBAN>{line.payer_account}</IBAN></Id></DbtrAcct>"
        parties += "</RltdPties>"
    remittance = ""
    if line.remittance or line.creditor_reference:
        remittance = "<RmtInf>"
        if line.remittance:
            remittance += f"<Ustrd>{escape(line.remittance)}</Ustrd>"
        if line.creditor_reference:
            remittance += (
                "<Strd><CdtrRefInf><Tp><CdOrPrtry><Cd>SCOR</Cd></CdOrPrtry></Tp>"
                f"<Ref>{line.creditor_reference}</Ref></CdtrRefInf></Strd>"
            )
        remittance += "</RmtInf>"
    return (
        f"<TxDtls><Refs><AcctSvcrRef>{line.bank_reference}</AcctSvcrRef>"
        f"<EndToEndId>{escape(line.end_to_end_id)}</EndToEndId></Refs>"
        f'<AmtDtls><TxAmt><Amt Ccy="{currency}">{_amount(line.amount)}</Amt></TxAmt></AmtDtls>'
        f"{parties}{remittance}</TxDtls>"
    )


def _entry(lines: Sequence[Line], currency: str, booked: date) -> str:
    total = sum((x.amount for x in lines), Decimal(0))
    batch = f"<Btch><NbOfTxs>{len(lines)}</NbOfTxs></Btch>" if len(lines) > 1 else ""
    return (
        f'<Ntry><NtryRef>{lines[0].bank_reference}</NtryRef><Amt Ccy="{currency}">{_amount(total)}</Amt>'
        f"<CdtDbtInd>{'DBIT' if lines[0].debit else 'CRDT'}</CdtDbtInd><Sts>BOOK</Sts>"
        f"<BookgDt><Dt>{booked.isoformat()}</Dt></BookgDt><ValDt><Dt>{booked.isoformat()}</Dt></ValDt>"
        f"<AcctSvcrRef>{lines[0].bank_reference}</AcctSvcrRef>"
        "<BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>RCDT</Cd><SubFmlyCd>ESCT</SubFmlyCd></Fmly></Domn></BkTxCd>"
        f"<NtryDtls>{batch}{''.join(_tx(x, currency) for x in lines)}</NtryDtls></Ntry>"
    )


def _numbered(lines: Sequence[Line], statement_id: str) -> list[Line]:
    """Each line with a bank reference of its own (the import's line key) unless it has one."""
    return [
        x if x.bank_reference else Line(**{**x.__dict__, "bank_reference": f"{statement_id}-{n:06d}".replace("/", "-")})
        for n, x in enumerate(lines, 1)
    ]


def camt053(
    lines: Sequence[Line | Sequence[Line]],
    *,
    statement_id: str,
    currency: str = "EUR",
    opening: Decimal = Decimal("1000.00"),
    booked: date | None = None,
    account: str = BANK_ACCOUNT,
) -> bytes:
    """A camt.053.001.02 document of one statement; an item that is a sequence of lines is one
    batch entry (`Btch`, one `TxDtls` each)."""
    booked = booked or date.today()
    groups = [[x] if isinstance(x, Line) else list(x) for x in lines]
    flat = _numbered([x for g in groups for x in g], statement_id)
    it = iter(flat)
    groups = [[next(it) for _ in g] for g in groups]
    signed = sum((-x.amount if x.debit else x.amount for x in flat), Decimal(0))
    closing = opening + signed

    def balance(code: str, value: Decimal) -> str:
        return (
            f"<Bal><Tp><CdOrPrtry><Cd>{code}</Cd></CdOrPrtry></Tp>"
            f'<Amt Ccy="{currency}">{_amount(abs(value))}</Amt>'
            f"<CdtDbtInd>{'CRDT' if value >= 0 else 'DBIT'}</CdtDbtInd><Dt><Dt>{booked.isoformat()}</Dt></Dt></Bal>"
        )

    body = "".join(_entry(g, currency, booked) for g in groups)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02">'
        f"<BkToCstmrStmt><GrpHdr><MsgId>MSG-{escape(statement_id)}</MsgId>"
        f"<CreDtTm>{booked.isoformat()}T18:00:00Z</CreDtTm></GrpHdr>"
        f"<Stmt><Id>{escape(statement_id)}</Id><ElctrncSeqNb>1</ElctrncSeqNb>"
        f"<CreDtTm>{booked.isoformat()}T18:00:00Z</CreDtTm>"
        f"<Acct><Id><IBAN>{account}</IBAN></Id><Ccy>{currency}</Ccy></Acct>"
        f"{balance('OPBD', opening)}{balance('CLBD', closing)}{body}</Stmt></BkToCstmrStmt></Document>\n"
    ).encode()


def _mt_amount(value: Decimal) -> str:
    return _amount(value).replace(".", ",")


def mt940(
    lines: Sequence[Line],
    *,
    statement_id: str,
    currency: str = "EUR",
    opening: Decimal = Decimal("1000.00"),
    booked: date | None = None,
    account: str = BANK_ACCOUNT,
) -> bytes:
    """An MT940 statement (`:20:` … `:62F:`), each line a `:61:` and a GVC `:86:` whose sub-fields
            start lines of their own (each at most 65 characters); the remittance is cut every 27 characters,
        mid-word as banks cut it (a reader joins the sub-fields as they are), never after a space (trimmed
    with the line's end)."""
    booked = booked or date.today()
    day = booked.strftime("%y%m%d")
    lines = _numbered(lines, statement_id)
    out = [
        f":20:{statement_id[:16]}",
        f":25:{account}",
        ":28C:00001/001",
        f":60F:C{day}{currency}{_mt_amount(opening)}",
    ]
    closing = opening
    for x in lines:
        closing += -x.amount if x.debit else x.amount
        mark = "D" if x.debit else "C"
        out.append(f":61:{day}{booked.strftime('%m%d')}{mark}{_mt_amount(x.amount)}NTRFNONREF//{x.bank_reference}")
        fields = [f"{'177' if x.debit else '166'}?00{'UEBERWEISUNG' if x.debit else 'GUTSCHRIFT'}"]
        fields.append(f"?20EREF+{x.end_to_end_id}"[:65])
        text = "SVWZ+" + (f"{x.creditor_reference} " if x.creditor_reference else "") + x.remittance
        sub = 21
        while text:  # ?21..?29, up to 27 characters each; a space never ends one (a line's end is trimmed)
            cut = 27
            while cut > 1 and cut < len(text) and text[cut - 1] == " ":
                cut -= 1
            fields.append(f"?{sub}{text[:cut]}")
            sub, text = sub + 1, text[cut:]
        if x.payer_account:
            fields.append(f"?31{x.payer_account}")
        if x.payer_name:
            fields.append(f"?32{x.payer_name[:27]}")
        out.append(":86:" + fields[0])
        out.extend(fields[1:])
    mark = "C" if closing >= 0 else "D"
    out.append(f":62F:{mark}{day}{currency}{_mt_amount(abs(closing))}")
    return ("\r\n".join(out) + "\r\n-\r\n").encode()
