"""The input file of an import: a CSV export (delimiter sniffed, UTF-8 with or without a BOM, or the
encoding given) or JSON lines, read as records with the number of the line each starts on.

`Source.scan` reads the whole file once before anything is sent: its SHA-256 (which names the
import: state file, Idempotency-Keys), its header, how many rows it has, and whether it decodes at
all (a file in the wrong encoding is a usage error, not 10,000 rejected rows).
"""

import codecs
import csv
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

DELIMITERS = ",;\t|"
_SAMPLE = 64 * 1024


class SourceError(ValueError):
    """A file that cannot be read as asked (encoding, format): a usage error."""


@dataclass(frozen=True)
class Scan:
    sha256: str
    header: list[str]
    rows: int  # data records (CSV: after the header row)


@dataclass
class Source:
    path: Path
    format: str  # "csv" | "jsonl"
    encoding: str = "utf-8-sig"
    delimiter: str | None = None  # CSV; sniffed when None
    header_row: int | None = 1  # CSV: the record that holds the column names; None: the first
    is_header: Callable[[list[str]], bool] | None = None  # ... for which this holds (of the first 100)

    @staticmethod
    def format_of(path: Path, given: str | None) -> str:
        if given:
            return given
        return "jsonl" if path.suffix.lower() in (".jsonl", ".ndjson", ".json") else "csv"

    def scan(self) -> Scan:
        digest = hashlib.sha256()
        try:
            with self.path.open("rb") as raw:
                while chunk := raw.read(1 << 20):
                    digest.update(chunk)
        except OSError as exc:
            raise SourceError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        header: list[str] = []
        rows = 0
        keys: dict[str, None] = {}
        for i, (_, record) in enumerate(self.records()):
            rows += 1
            if self.format == "jsonl" and i < 1000:  # JSON lines: the keys the first lines use
                keys.update(dict.fromkeys(k for k in record if k != _BAD_LINE))
        header = list(keys) if self.format == "jsonl" else self._csv_header()
        return Scan(digest.hexdigest(), header, rows)

    def records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(line number the record starts on, record) for each data record; blank lines are left out."""
        try:
            if self.format == "jsonl":
                yield from self._jsonl()
            else:
                yield from self._csv()
        except UnicodeDecodeError as exc:
            raise SourceError(
                f"{self.path} is not {self.encoding.removesuffix('-sig')} text ({exc.reason} at byte "
                f"{exc.start} of a chunk): give --encoding (e.g. cp1252 or latin-1)"
            ) from None
        except csv.Error as exc:
            raise SourceError(f"{self.path}: not a CSV file this reader understands: {exc}") from None

    def _open(self):
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise SourceError(f"unknown encoding {self.encoding!r}") from None
        return self.path.open(encoding=self.encoding, newline="")

    def _jsonl(self) -> Iterator[tuple[int, dict[str, Any]]]:
        with self._open() as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line, parse_float=Decimal)  # amounts exactly as written
                except ValueError as exc:
                    yield number, {_BAD_LINE: f"not JSON: {exc}"}
                    continue
                if not isinstance(record, dict):
                    yield number, {_BAD_LINE: "not a JSON object"}
                    continue
                yield number, flatten(record)

    def _dialect_delimiter(self, text: str) -> str:
        if self.delimiter:
            return self.delimiter
        sample = "\n".join(text.splitlines()[(self.header_row or 1) - 1 :][:50])
        try:
            return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
        except csv.Error:
            return ","

    def _reader(self, stream) -> Any:
        start = stream.read(_SAMPLE)
        delimiter = self._dialect_delimiter(start)
        stream.seek(0)
        return csv.reader(stream, delimiter=delimiter)

    def _header(self, reader: Any) -> list[str]:
        if self.header_row is None:
            for _ in range(100):
                row = next(reader, None)
                if row is None:
                    break
                if self.is_header is not None and self.is_header(_names(row)):
                    return _names(row)
            raise SourceError(f"{self.path}: no row among the first 100 has the columns the mapping needs")
        header: list[str] | None = None
        for _ in range(self.header_row):
            header = next(reader, None)
            if header is None:
                raise SourceError(f"{self.path} has no header row (row {self.header_row} of the file)")
        return _names(header or [])

    def _csv_header(self) -> list[str]:
        with self._open() as stream:
            return self._header(self._reader(stream))

    def _csv(self) -> Iterator[tuple[int, dict[str, Any]]]:
        with self._open() as stream:
            reader = self._reader(stream)
            names = self._header(reader)
            while True:
                line = reader.line_num + 1
                cells = next(reader, None)
                if cells is None:
                    return
                if not any(cell.strip() for cell in cells):
                    continue
                yield line, dict(zip(names, cells, strict=False))


def _names(header: list[str]) -> list[str]:
    return [name.strip().lstrip("\ufeff").strip() for name in header]


_BAD_LINE = "\x00line"  # the key of a JSON line that could not be read: a row error, never a field


def unreadable(record: dict[str, Any]) -> str | None:
    """Why a record could not be read at all (a JSON line that is not an object), else None."""
    return record.get(_BAD_LINE)


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """An API-shaped invoice as flat fields: {"customer": {"email": e}} -> customer_email,
    {"metadata": {"po": p}} -> "metadata.po"; other keys unchanged."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if key == "customer" and isinstance(value, dict):
            flat.update({f"customer_{k}": v for k, v in value.items()})
        elif key == "metadata" and isinstance(value, dict):
            flat.update({f"metadata.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat
