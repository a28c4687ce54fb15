"""What an import keeps on disk between runs: the state file (which input, how many of its rows the
server has acknowledged, the counts so far) and the errors file (one line per rejected row).

Order of writes after each acknowledged batch: the batch's errors first (flushed), then the state
(written to a temporary file and renamed over the old one, so it is always whole). A run killed in
between sends that batch again on resume — a replay under the same Idempotency-Key — and the errors
file, which skips lines it already holds, gets no duplicates.
"""

import csv
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

ERROR_COLUMNS = ("row", "external_id", "column", "code", "message")


@dataclass
class State:
    input_sha256: str
    mapping: str  # Mapping.fingerprint(): another mapping is another import
    rows_total: int
    rows_done: int = 0  # data rows acknowledged, from the top of the file
    counts: dict[str, int] = field(default_factory=dict)
    run: int = 0  # +1 on each --restart: part of the Idempotency-Keys

    def same_import(self, other: "State") -> bool:
        return (self.input_sha256, self.mapping, self.rows_total) == (
            other.input_sha256,
            other.mapping,
            other.rows_total,
        )


def load_state(path: Path) -> State | None:
    """The state in `path`, or None if there is none (or it is unreadable: start over)."""
    try:
        doc: Any = orjson.loads(path.read_bytes())
        return State(
            input_sha256=str(doc["input_sha256"]),
            mapping=str(doc["mapping"]),
            rows_total=int(doc["rows_total"]),
            rows_done=int(doc["rows_done"]),
            counts={str(k): int(v) for k, v in doc.get("counts", {}).items()},
            run=int(doc.get("run", 0)),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def save_state(path: Path, state: State) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as out:
        out.write(orjson.dumps(asdict(state), option=orjson.OPT_INDENT_2))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


class ErrorsFile:
    """The rejected rows as CSV (row, external_id, column, code, message), appended batch by batch."""

    def __init__(self, path: Path, *, fresh: bool):
        self.path = path
        self.seen: set[tuple[str, ...]] = set()
        if not fresh and path.exists():
            with path.open(encoding="utf-8", newline="") as existing:
                rows = csv.reader(existing)
                next(rows, None)
                self.seen = {tuple(r) for r in rows}
        write_header = fresh or not path.exists() or path.stat().st_size == 0
        self.file = path.open("w" if fresh else "a", encoding="utf-8", newline="")
        self.writer = csv.writer(self.file)
        if write_header:
            self.writer.writerow(ERROR_COLUMNS)
        self.written = len(self.seen)

    def add(self, row: int, external_id: str, column: str, code: str, message: str) -> None:
        line = (str(row), external_id, column, code, message)
        if line in self.seen:
            return
        self.seen.add(line)
        self.writer.writerow(line)
        self.written += 1

    def flush(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()
