"""How the columns of an accounting system's export become the invoices of POST /v1/invoices/bulk.

A mapping (YAML or JSON, `dunning import invoices --mapping FILE`) names, for the columns whose
header is not one of our field names, the field they fill; gives defaults for fields the export
lacks; and says how the export writes dates and amounts:

    columns: {"Invoice No": [external_id, number], "Customer": customer_name, "Due": due_date}
    defaults: {customer_locale: en-GB, customer_timezone: Europe/London, currency: GBP}
    date_format: "%d/%m/%Y"        # strptime; ISO dates (2026-11-02) are always understood
    decimal_comma: false           # true: 1.250,00 means 1250.00
    header_row: 1                  # CSV: the row (record) that holds the column names; or auto:
                                   # the first row with the columns the mapping needs
    skip_if: {Status: [Paid, Voided]}   # rows whose column (or field) has one of these values are left out
    line_items: false              # true: one row per invoice line; consecutive rows of one
                                   # external_id are one invoice (its first row's values)
    delimiter: ","                 # CSV; sniffed when absent
    encoding: utf-8                # a BOM is skipped either way

`parse_mapping` checks the document; `resolve` checks it against the file's header (before anything
is sent: a required field with no column and no default fails, naming the field and the column the
mapping expected); `Plan.convert` turns one row into an invoice, or into errors naming its columns.
The server's own rules (currency codes, locales, e-mail addresses...) stay the server's: the CLI
converts formats, it does not validate content a second time.
"""

import hashlib
import re
from collections.abc import Mapping as AnyMapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import yaml

from dunning_cli.import_values import drop_extra_zeros, normalize_amount, parse_date

FIELDS = (
    "external_id",
    "number",
    "customer_external_id",
    "customer_name",
    "customer_email",
    "customer_locale",
    "customer_timezone",
    "currency",
    "amount_due",
    "issue_date",
    "due_date",
    "payment_url",
)
REQUIRED = tuple(f for f in FIELDS if f != "payment_url")
METADATA = "metadata."
DATES = ("issue_date", "due_date")
_KEYS = {"columns", "defaults", "date_format", "decimal_comma", "header_row", "skip_if", "line_items"}
_KEYS |= {"delimiter", "encoding"}
_METADATA_KEY = re.compile(r"^metadata\.\S.{0,39}$")


class MappingError(ValueError):
    """A mapping that cannot work with this file: a usage error, reported before anything is sent."""


def is_field(name: str) -> bool:
    return name in FIELDS or bool(_METADATA_KEY.fullmatch(name))


@dataclass(frozen=True)
class Mapping:
    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)  # input column -> our fields
    defaults: dict[str, str] = field(default_factory=dict)
    date_format: str | None = None
    decimal_comma: bool = False
    header_row: int | None = 1  # None: "auto", the first row that looks_like_header
    skip_if: dict[str, frozenset[str]] = field(default_factory=dict)
    line_items: bool = False
    delimiter: str | None = None
    encoding: str | None = None

    def fingerprint(self) -> str:
        """A short hash of what changes the invoices sent (part of each batch's Idempotency-Key)."""
        doc = {
            "columns": {k: list(v) for k, v in self.columns.items()},
            "defaults": self.defaults,
            "date_format": self.date_format,
            "decimal_comma": self.decimal_comma,
            "skip_if": {k: sorted(v) for k, v in self.skip_if.items()},
            "line_items": self.line_items,
        }
        return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


SHIPPED = Path(__file__).parent / "mappings"


def shipped_mappings() -> list[str]:
    """The names of the example mappings that ship with the CLI (`--mapping xero`)."""
    return sorted(p.stem for p in SHIPPED.glob("*.yaml"))


def load_mapping(path: str | Path) -> Mapping:
    """The mapping in a YAML or JSON file (JSON is YAML), or a shipped one by name; MappingError if
    it is neither."""
    path = Path(path)
    if not path.exists() and str(path) in shipped_mappings():
        path = SHIPPED / f"{path}.yaml"
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise MappingError(f"mapping {path}: cannot read it: {exc}") from None
    return parse_mapping(doc, source=str(path))


def _text_dict(doc: Any, key: str, source: str) -> dict[str, Any]:
    value = doc.get(key) or {}
    if not isinstance(value, AnyMapping) or not all(isinstance(k, str) for k in value):
        raise MappingError(f"mapping {source}: {key} must be a map of column names")
    return dict(value)


def parse_mapping(doc: Any, source: str = "mapping") -> Mapping:
    """Check a mapping document; every error names the key or the column at fault."""
    if doc is None:
        doc = {}
    if not isinstance(doc, AnyMapping):
        raise MappingError(f"mapping {source}: must be a map with `columns`, `defaults`, ...")
    if unknown := sorted(set(doc) - _KEYS):
        raise MappingError(f"mapping {source}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})")
    columns: dict[str, tuple[str, ...]] = {}
    for column, targets in _text_dict(doc, "columns", source).items():
        names = (targets,) if isinstance(targets, str) else targets
        if not isinstance(names, list | tuple) or not names or not all(isinstance(t, str) for t in names):
            raise MappingError(f"mapping {source}: column {column!r} must map to a field name or a list of them")
        for target in names:
            if not is_field(target):
                raise MappingError(
                    f"mapping {source}: column {column!r} maps to unknown field {target!r} "
                    f"(fields: {', '.join(FIELDS)}, metadata.<key>)"
                )
        columns[column] = tuple(names)
    defaults: dict[str, str] = {}
    for name, value in _text_dict(doc, "defaults", source).items():
        if not is_field(name):
            raise MappingError(f"mapping {source}: default for unknown field {name!r}")
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise MappingError(f"mapping {source}: default for {name} must be text")
        defaults[name] = str(value)
    skip_if: dict[str, frozenset[str]] = {}
    for column, values in _text_dict(doc, "skip_if", source).items():
        values = [values] if isinstance(values, str) else values
        if not isinstance(values, list) or not all(isinstance(v, str | int) for v in values):
            raise MappingError(f"mapping {source}: skip_if {column!r} must be a list of values")
        skip_if[column] = frozenset(str(v).strip() for v in values)
    date_format = doc.get("date_format")
    if date_format is not None:
        _check_date_format(date_format, source)
    header_row = doc.get("header_row", 1)
    if header_row == "auto":
        header_row = None
    elif not isinstance(header_row, int) or isinstance(header_row, bool) or header_row < 1:
        raise MappingError(f"mapping {source}: header_row must be a row number (1 or more) or auto")
    for flag in ("decimal_comma", "line_items"):
        if not isinstance(doc.get(flag, False), bool):
            raise MappingError(f"mapping {source}: {flag} must be true or false")
    delimiter = doc.get("delimiter")
    if delimiter is not None and (not isinstance(delimiter, str) or len(delimiter) != 1):
        raise MappingError(f"mapping {source}: delimiter must be one character")
    encoding = doc.get("encoding")
    if encoding is not None and not isinstance(encoding, str):
        raise MappingError(f"mapping {source}: encoding must be a name such as cp1252")
    return Mapping(
        columns=columns,
        defaults=defaults,
        date_format=date_format,
        decimal_comma=doc.get("decimal_comma", False),
        header_row=header_row,
        skip_if=skip_if,
        line_items=doc.get("line_items", False),
        delimiter=delimiter,
        encoding=encoding,
    )


def _check_date_format(fmt: Any, source: str) -> None:
    """A strptime format that reads back the date it writes (so "%d/%m" without a year fails)."""
    sample = date(2026, 11, 23)
    try:
        ok = isinstance(fmt, str) and datetime.strptime(sample.strftime(fmt), fmt).date() == sample
    except ValueError:
        ok = False
    if not ok:
        raise MappingError(f"mapping {source}: date_format {fmt!r} is not a strptime format with day, month and year")


@dataclass(frozen=True)
class RowError:
    """Why one row was rejected: the input column (or "(default field)"), a code and a message."""

    column: str
    code: str
    message: str


@dataclass
class Row:
    """One input row converted: the invoice to send, or the errors that keep it back."""

    external_id: str
    invoice: dict[str, Any] | None
    errors: list[RowError]


@dataclass(frozen=True)
class Plan:
    """A mapping resolved against the file's header: the column each field is read from."""

    mapping: Mapping
    sources: dict[str, str]  # our field -> input column
    skips: dict[str, frozenset[str]] = field(default_factory=dict)  # skip_if, by the header's names

    def column_of(self, name: str) -> str:
        """The input column a field came from ("(default currency)" for a default; else the field)."""
        if name in self.sources:
            return self.sources[name]
        if name in self.mapping.defaults:
            return f"(default {name})"
        return name

    def skipped(self, record: AnyMapping[str, Any]) -> bool:
        return any(_blank_to_text(record.get(c)) in values for c, values in self.skips.items())

    def external_id(self, record: AnyMapping[str, Any]) -> str:
        value = record.get(self.sources.get("external_id", ""))
        return value.strip() if isinstance(value, str) else "" if value is None else str(value)

    def convert(self, record: AnyMapping[str, Any]) -> Row:
        values: dict[str, str] = {}
        errors: list[RowError] = []
        for name in (*FIELDS, *(k for k in self.sources if k.startswith(METADATA))):
            column = self.sources.get(name)
            raw = record.get(column) if column is not None else None
            if isinstance(raw, list | dict):
                errors.append(RowError(self.column_of(name), "text_type", "must be text, not a list or an object"))
                continue
            text = _blank_to_text(raw)
            if text == "" and name in self.mapping.defaults:
                text = self.mapping.defaults[name]
            if text == "":
                if name in REQUIRED:
                    errors.append(RowError(self.column_of(name), "missing", f"{name} is required and is empty"))
                continue
            try:
                values[name] = self._format(name, text, numeric=isinstance(raw, int | Decimal | float))
            except ValueError as exc:
                code = "date_format" if name in DATES else "amount_format"
                errors.append(RowError(self.column_of(name), code, str(exc)))
        if "amount_due" in values and "currency" in values:
            values["amount_due"] = drop_extra_zeros(values["amount_due"], values["currency"])
        metadata = {k.removeprefix(METADATA): v for k, v in values.items() if k.startswith(METADATA)}
        invoice = None if errors else _invoice(values, metadata)
        return Row(values.get("external_id", self.external_id(record)), invoice, errors)

    def _format(self, name: str, text: str, *, numeric: bool) -> str:
        if name in DATES:
            return parse_date(text, self.mapping.date_format)
        if name == "currency":
            return text.upper()
        if name == "amount_due":  # a JSON number is written with a decimal point whatever the export's habit
            return normalize_amount(text, self.mapping.decimal_comma and not numeric)
        return text


def _blank_to_text(value: Any) -> str:
    if value is None or isinstance(value, list | dict):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip()


def _invoice(values: dict[str, str], metadata: dict[str, str]) -> dict[str, Any]:
    """The bulk endpoint's item (InvoiceIn) from the flat fields."""
    invoice: dict[str, Any] = {
        "external_id": values["external_id"],
        "number": values["number"],
        "customer": {
            "external_id": values["customer_external_id"],
            "name": values["customer_name"],
            "email": values["customer_email"],
            "locale": values["customer_locale"],
            "timezone": values["customer_timezone"],
        },
        "currency": values["currency"],
        "amount_due": values["amount_due"],
        "issue_date": values["issue_date"],
        "due_date": values["due_date"],
    }
    if "payment_url" in values:
        invoice["payment_url"] = values["payment_url"]
    if metadata:
        invoice["metadata"] = metadata
    return invoice


def canonical(column: str) -> str:
    """A column name as matched: case, surrounding spaces and a leading "*" (Xero's mark of a
    required column) do not count."""
    return column.strip().lstrip("*").strip().casefold()


def _own_field(column: str) -> str | None:
    """The field a header names by itself ("Due_Date" -> due_date, "metadata.PO" -> metadata.PO)."""
    name = canonical(column)
    if name in FIELDS:
        return name
    if name.startswith(METADATA) and is_field(METADATA + column.strip()[len(METADATA) :]):
        return METADATA + column.strip()[len(METADATA) :]
    return None


def looks_like_header(mapping: Mapping, names: list[str]) -> bool:
    """Whether a row holds the column names (for header_row: auto): for each required field without
    a default, one of the columns the mapping reads it from (or its own name) is there."""
    have = {canonical(n) for n in names}
    for name in REQUIRED:
        if name in mapping.defaults:
            continue
        candidates = {canonical(c) for c, targets in mapping.columns.items() if name in targets} or {name}
        if not candidates & have:
            return False
    return True


def resolve(mapping: Mapping, header: list[str], *, complete: bool = True) -> Plan:
    """The column of each field: the mapping's (the first present, when several map to one field),
    else a header equal to the field's name. With `complete` (a CSV header) every required field
    needs a column or a default; JSON lines, whose keys may differ line by line, report a missing
    value per row instead."""
    present = {canonical(h): h for h in reversed(header)}  # the first of equal names wins
    sources: dict[str, str] = {}
    expected: dict[str, str] = {}  # field -> the column the mapping named, for the error message
    for column, targets in mapping.columns.items():
        for target in targets:
            if canonical(column) in present:
                sources.setdefault(target, present[canonical(column)])
            else:
                expected.setdefault(target, column)
    mapped = {canonical(c) for c in mapping.columns}
    for column in header:
        if (own := _own_field(column)) is not None and canonical(column) not in mapped:
            sources.setdefault(own, column)
    skips: dict[str, frozenset[str]] = {}
    for column, values in mapping.skip_if.items():  # a column of the file, or one of our fields
        if canonical(column) in present:
            skips[present[canonical(column)]] = values
        elif column in sources:
            skips[sources[column]] = values
        elif complete:
            raise MappingError(f"skip_if names column {column!r}, which is not in the file's header")
    missing = [f for f in REQUIRED if f not in sources and f not in mapping.defaults]
    if complete and missing:
        name = missing[0]
        if name in expected:
            raise MappingError(f"column {expected[name]!r} (for {name}) is not in the file's header")
        raise MappingError(f"no column for required field {name}: add a column named {name}, or map one to it")
    return Plan(mapping, sources, skips)
