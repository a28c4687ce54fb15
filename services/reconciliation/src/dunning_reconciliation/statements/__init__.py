"""Bank statements: CAMT.053 and MT940 files parsed into one model (model.py). `parse` detects the
format; a bad file is refused whole with a StatementError naming the element or line."""

from collections.abc import Callable

from dunning_reconciliation.statements import camt, mt940
from dunning_reconciliation.statements.model import Statement, StatementError, StatementLine

FORMATS = ("camt053", "mt940")

__all__ = ["FORMATS", "Statement", "StatementError", "StatementLine", "detect", "parse"]


def detect(data: bytes) -> str:
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:4096]
    if head.startswith(b"<"):
        return "camt053"
    if b":20:" in data[:65536] and (b":25:" in data[:65536] or b":61:" in data[:65536]):
        return "mt940"
    raise StatementError("file", "neither a CAMT.053 XML document nor an MT940 statement")


def parse(
    data: bytes,
    format: str | None = None,
    *,
    first: Callable[[Statement], object] | None = None,
    first_lines: int = 0,
) -> list[Statement]:
    """The statements in `data` (a CAMT.053 document or an MT940 file, detected unless `format`).
    `first`: called with the first statement's first `first_lines` lines as soon as they are read
    (CAMT.053 only: see camt.parse)."""
    if not data.strip():
        raise StatementError("file", "is empty")
    kind = format or detect(data)
    if kind not in FORMATS:
        raise StatementError("format", f"must be one of {', '.join(FORMATS)}")
    if kind == "camt053":
        return camt.parse(data, first, first_lines)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # MT940 files are often ISO 8859-1
    return mt940.parse(text.replace("\r\n", "\n"))
