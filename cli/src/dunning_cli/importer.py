"""`dunning import invoices FILE`: an accounting system's export of open invoices, sent to
invoice-ingest's bulk endpoint in upsert mode, batch by batch, with a progress bar; resumable; every
rejected row written to an errors file.

The flow: read the file once (hash, header, row count: import_source), resolve the mapping against
the header (import_mapping: a bad mapping fails here, before anything is sent), pick up the state
file if it is this import's (import_state), then for each batch: convert its rows, POST the valid
ones (import_client), write the rejected rows to the errors file, record the batch as acknowledged.
"""

import argparse
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from dunning_cli.import_client import BulkClient, ImportStopped
from dunning_cli.import_mapping import (
    Mapping,
    MappingError,
    Plan,
    RowError,
    load_mapping,
    looks_like_header,
    resolve,
    shipped_mappings,
)
from dunning_cli.import_progress import Progress
from dunning_cli.import_source import Source, SourceError, unreadable
from dunning_cli.import_state import ErrorsFile, State, load_state, save_state

DEFAULT_URL = "http://127.0.0.1:8001"
MAX_BATCH = 10_000
ACCEPTED = ("created", "updated", "existing")

HELP = """\
Import open invoices from a CSV export (or JSON lines) through invoice-ingest's bulk upsert.

Columns whose header is one of our field names are used as they are: external_id, number,
customer_external_id, customer_name, customer_email, customer_locale, customer_timezone, currency,
amount_due, issue_date, due_date, payment_url, metadata.<key>. Other exports need a mapping file
(--mapping, YAML or JSON): columns, defaults, date_format, decimal_comma, header_row, skip_if,
line_items. Mappings for Xero and QuickBooks Online exports ship with the CLI: --mapping xero,
--mapping quickbooks-online (see cli/README.md).

An invoice already imported is updated when its row changed and left alone when it did not: an
import never creates an invoice twice. Rows are matched by external_id (upsert), and each batch
carries an Idempotency-Key made of the file's content hash and the batch's rows, so a batch sent
again is a replay. Interrupted (Ctrl-C, a kill, a network outage)? Run the same command again: it
continues after the last batch the server acknowledged (the state file); --restart starts over.

Rejected rows (refused by the server, or unreadable here, e.g. a date not in the mapping's format)
go to the errors file: row number in the input, external_id, column, code, message.
Exit status: 0 every row accepted, 1 some rows rejected or the import stopped (re-run to resume),
2 usage errors (bad arguments, unreadable file, bad mapping), 130 interrupted.
"""


def add_parser(commands: Any) -> None:
    """The `import invoices` sub-command, added to the CLI's sub-parsers."""
    group = commands.add_parser("import", help="import invoices from a CSV or JSON lines export")
    actions = group.add_subparsers(dest="action", required=True)
    cmd = actions.add_parser(
        "invoices",
        help="open invoices from an accounting export, through the bulk upsert (resumable)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument("file", type=Path, help="the CSV or JSON lines file")
    cmd.add_argument("--format", choices=["csv", "jsonl"], help="default: by extension (.jsonl/.ndjson: JSON lines)")
    cmd.add_argument(
        "--mapping",
        type=Path,
        help=f"YAML or JSON mapping of the export's columns, or a shipped one: {', '.join(shipped_mappings())}",
    )
    cmd.add_argument("--delimiter", help="CSV delimiter (default: sniffed from , ; tab |)")
    cmd.add_argument("--encoding", help="the file's encoding (default utf-8, with or without BOM)")
    cmd.add_argument("--url", default=os.environ.get("DUNNING_INGEST_URL", DEFAULT_URL), help="invoice-ingest")
    cmd.add_argument("--api-key", default=os.environ.get("DUNNING_API_KEY"), help="default: $DUNNING_API_KEY")
    cmd.add_argument("--batch-size", type=_batch_size, default=1000, help=f"invoices a request (max {MAX_BATCH})")
    cmd.add_argument("--state", type=Path, help="state file (default: <file>.import-state.json)")
    cmd.add_argument("--errors", type=Path, help="errors file (default: <file>.errors.csv)")
    cmd.add_argument("--restart", action="store_true", help="start over, ignoring the state file")
    cmd.add_argument("--retries", type=int, default=10, help="retries of a batch on transient failures")
    cmd.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    cmd.add_argument("--json", action="store_true", help="print the summary as JSON")


def _batch_size(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_BATCH:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_BATCH}")
    return value


@dataclass
class Unit:
    """One invoice's rows in the input (several with line_items), converted; or a skipped row."""

    row: int  # the line its first row starts on
    rows: int
    external_id: str
    invoice: dict[str, Any] | None = None
    errors: list[RowError] = field(default_factory=list)
    skipped: bool = False


def units(plan: Plan, records: Iterable[tuple[int, dict[str, Any]]]) -> Iterator[Unit]:
    """The input's rows as units; with line_items, consecutive rows of one external_id are one unit
    (the first row's values), yielded once the next row belongs to another invoice."""
    pending: Unit | None = None
    for line, record in records:
        if pending is not None and plan.mapping.line_items and not pending.skipped:
            ext = plan.external_id(record)
            if ext and ext == pending.external_id and not plan.skipped(record):
                pending.rows += 1
                continue
        if pending is not None:
            yield pending
        if (why := unreadable(record)) is not None:
            pending = Unit(line, 1, "", errors=[RowError("(line)", "unreadable", why)])
        elif plan.skipped(record):
            pending = Unit(line, 1, plan.external_id(record), skipped=True)
        else:
            row = plan.convert(record)
            pending = Unit(line, 1, row.external_id, row.invoice, row.errors)
    if pending is not None:
        yield pending


def batches(stream: Iterable[Unit], size: int) -> Iterator[list[Unit]]:
    """Units grouped so that each batch has at most `size` invoices to send (and a bounded number of
    rows that send nothing)."""
    batch: list[Unit] = []
    sending = 0
    for unit in stream:
        batch.append(unit)
        sending += unit.invoice is not None
        if sending >= size or len(batch) >= 10 * size:
            yield batch
            batch, sending = [], 0
    if batch:
        yield batch


def _field_name(path: str) -> str:
    """A server error's field ("invoices.3.customer.email") as our flat field name (customer_email)."""
    parts = path.split(".", 2)
    rest = parts[2] if len(parts) == 3 and parts[0] == "invoices" else path
    if rest.startswith("customer."):
        return "customer_" + rest.removeprefix("customer.")
    return rest


class Import:
    def __init__(self, args: argparse.Namespace, plan: Plan, source: Source, state: State, key_prefix: str):
        self.args, self.plan, self.source, self.state = args, plan, source, state
        self.key_prefix = key_prefix
        self.counts = {name: state.counts.get(name, 0) for name in (*ACCEPTED, "rejected", "skipped")}

    def run(self, client: BulkClient, errors: ErrorsFile, progress: Progress, state_path: Path) -> None:
        progress.update(self.state.rows_done, self.counts, force=True)
        records = self._records_after(self.state.rows_done)
        for batch in batches(units(self.plan, records), self.args.batch_size):
            self._send(client, batch, errors)
            errors.flush()
            self.state.rows_done += sum(u.rows for u in batch)
            self.state.counts = dict(self.counts)
            save_state(state_path, self.state)
            progress.update(self.state.rows_done, self.counts)

    def _records_after(self, done: int) -> Iterator[tuple[int, dict[str, Any]]]:
        for i, item in enumerate(self.source.records()):
            if i >= done:
                yield item

    def _send(self, client: BulkClient, batch: list[Unit], errors: ErrorsFile) -> None:
        sending = [u for u in batch if u.invoice is not None]
        for unit in batch:
            if unit.skipped:
                self.counts["skipped"] += unit.rows
            elif unit.errors:
                self._reject(errors, unit, [(e.column, e.code, e.message) for e in unit.errors])
        if not sending:
            return
        key = f"{self.key_prefix}-{sending[0].row}-{sending[-1].row}"
        answer = client.upsert([u.invoice for u in sending if u.invoice is not None], key)
        results = answer["results"]
        if len(results) != len(sending):
            raise ImportStopped(f"the server answered {len(results)} results for {len(sending)} invoices")
        for result in results:
            try:
                unit = sending[int(result["index"])]
            except (KeyError, ValueError, TypeError, IndexError):
                raise ImportStopped(f"the server answered a result without a valid index: {result!r}") from None
            status = result.get("status")
            if status in ACCEPTED:
                self.counts[status] += 1
                continue
            found = [
                (self.plan.column_of(_field_name(str(e.get("field", "")))), e.get("code") or status, e.get("message"))
                for e in result.get("errors") or []
            ]
            self._reject(errors, unit, found or [(self.plan.column_of("external_id"), str(status), str(status))])

    def _reject(self, errors: ErrorsFile, unit: Unit, found: list[tuple[str, Any, Any]]) -> None:
        self.counts["rejected"] += 1
        for column, code, message in found:
            errors.add(unit.row, unit.external_id, column, str(code), str(message))


def _fail(message: str, status: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


def _summary(args: argparse.Namespace, state: State, counts: dict[str, int], errors_path: Path) -> int:
    rejected = counts.get("rejected", 0)
    if args.json:
        print(orjson.dumps({"file": str(args.file), "rows": state.rows_total, **counts}).decode())
    else:
        tallies = ", ".join(f"{counts.get(n, 0)} {n}" for n in (*ACCEPTED, "rejected", "skipped"))
        print(f"{args.file}: {state.rows_done} of {state.rows_total} rows: {tallies}")
        if rejected:
            print(f"rejected rows, with the column and the reason: {errors_path}")
    return 1 if rejected else 0


def _pick_state(args: argparse.Namespace, fresh: State, path: Path) -> State:
    """The state file's import if it is this one (same file, mapping and rows) and not --restart;
    else `fresh`. A --restart is a new run of the same file: new Idempotency-Keys, so the server
    answers afresh (updated/existing now) instead of replaying the first run's answers."""
    state = load_state(path)
    if args.restart:
        fresh.run = state.run + 1 if state is not None else 0
        return fresh
    if state is None:
        return fresh
    if not state.same_import(fresh):
        print(f"{args.file} or its mapping changed since the last run: starting over", file=sys.stderr)
        return fresh
    if state.rows_done >= state.rows_total:
        print(f"{args.file} was imported already (--restart sends it again)", file=sys.stderr)
    elif state.rows_done:
        print(f"resuming {args.file} after row {state.rows_done} of {state.rows_total}", file=sys.stderr)
    return state


def run(args: argparse.Namespace) -> int:
    if not args.api_key:
        return _fail("no API key: give --api-key or set DUNNING_API_KEY")
    try:
        mapping = load_mapping(args.mapping) if args.mapping else Mapping()
        fmt = Source.format_of(args.file, args.format)
        source = Source(
            args.file,
            fmt,
            encoding=args.encoding or mapping.encoding or "utf-8-sig",
            delimiter=args.delimiter or mapping.delimiter,
            header_row=mapping.header_row,
            is_header=lambda names: looks_like_header(mapping, names),
        )
        scan = source.scan()
        plan = resolve(mapping, scan.header, complete=fmt == "csv")
    except (MappingError, SourceError) as exc:
        return _fail(str(exc))
    state_path = args.state or args.file.with_name(args.file.name + ".import-state.json")
    errors_path = args.errors or args.file.with_name(args.file.name + ".errors.csv")
    state = _pick_state(args, State(scan.sha256, mapping.fingerprint(), scan.rows), state_path)
    errors = ErrorsFile(errors_path, fresh=state.rows_done == 0)
    progress = Progress(state.rows_total, start_at=state.rows_done, enabled=not args.no_progress)
    client = BulkClient(
        args.url,
        args.api_key,
        retries=args.retries,
        on_retry=lambda reason, delay: progress.note(f"retrying in {delay:.1f}s: {reason}"),
    )
    job = Import(args, plan, source, state, key_prefix=f"import-{scan.sha256[:32]}-{mapping.fingerprint()}-{state.run}")
    try:
        save_state(state_path, state)
        job.run(client, errors, progress, state_path)
    except ImportStopped as exc:
        progress.note(f"error: {exc}")
        progress.note(f"{state.rows_done} of {state.rows_total} rows acknowledged; run the same command to resume")
        return 1
    except KeyboardInterrupt:
        progress.note(f"interrupted: {state.rows_done} of {state.rows_total} rows acknowledged; run again to resume")
        return 130
    except SourceError as exc:
        return _fail(str(exc))
    finally:
        errors.close()
        client.close()
    progress.finish(state.rows_done, job.counts)
    return _summary(args, state, job.counts, errors_path)
