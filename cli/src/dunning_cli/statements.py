"""`dunning statements import FILE`: upload a bank statement file (CAMT.053 or MT940) to
reconciliation, one statement per request (a file holding several accounts' or days' statements is
split, so each request stays statement-sized and a retry repeats one statement only), with the
progress bar of the invoice import, then print what became of the lines.

Safe to run twice: reconciliation answers a statement it has with `duplicate: true` and changes
nothing, so a transient failure is retried as is."""

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from dunning_cli.import_progress import Progress

DEFAULT_URL = "http://127.0.0.1:8004"
COUNTS = ("matched", "unmatched", "skipped", "duplicates")
_MT940_START = re.compile(rb"^:20:", re.MULTILINE)
_CAMT_OPEN = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?Stmt[\s>]")
_CAMT_CLOSE = re.compile(rb"</(?:[A-Za-z_][\w.-]*:)?Stmt\s*>")
_TRANSIENT = {429, 502, 503, 504}


class StatementProgress(Progress):
    """The invoice import's progress line, counting statements and what their lines became."""

    def line(self, done: int, counts: dict[str, int]) -> str:
        percent = 100.0 * done / self.total if self.total else 100.0
        elapsed = self.clock() - self.started
        lines = counts.get("lines", 0)
        rate = lines / elapsed if elapsed > 0 else 0.0
        tallies = " ".join(f"{name} {counts.get(name, 0)}" for name in COUNTS)
        bar = ""
        if self.tty:
            filled = int(20 * percent / 100)
            bar = "[" + "#" * filled + "." * (20 - filled) + "] "
        return f"{bar}{percent:5.1f}% {done}/{self.total} statements | {lines} lines: {tallies} | {rate:,.0f} lines/s"


def add_parser(commands: Any) -> None:
    group = commands.add_parser("statements", help="bank statements (CAMT.053, MT940)")
    actions = group.add_subparsers(dest="action", required=True)
    cmd = actions.add_parser(
        "import",
        help="import a bank statement file: each credit line is matched to invoices or queued",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument("file", type=Path, help="the CAMT.053 (.xml) or MT940 (.sta, .txt, .940) file")
    cmd.add_argument("--format", choices=["camt053", "mt940"], help="default: detected from the content")
    cmd.add_argument(
        "--url", default=os.environ.get("DUNNING_RECONCILIATION_URL", DEFAULT_URL), help="reconciliation's URL"
    )
    cmd.add_argument("--api-key", default=os.environ.get("DUNNING_API_KEY"), help="default: $DUNNING_API_KEY")
    cmd.add_argument("--retries", type=int, default=5, help="retries of a request on transient failures")
    cmd.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    cmd.add_argument("--json", action="store_true", help="print the answers as JSON")


def split(data: bytes, format: str | None) -> tuple[str, list[bytes]]:
    """The file's format and its statements, each a file of its own (one statement: the file as is)."""
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    kind = format or ("camt053" if head == b"<" else "mt940")
    if kind == "mt940":
        starts = [m.start() for m in _MT940_START.finditer(data)]
        if len(starts) <= 1:
            return kind, [data]
        return kind, [data[a:b] for a, b in zip(starts, [*starts[1:], len(data)], strict=True)]
    opens, closes = list(_CAMT_OPEN.finditer(data)), list(_CAMT_CLOSE.finditer(data))
    if len(opens) <= 1 or len(opens) != len(closes):
        return kind, [data]  # one statement, or a shape to leave to the server (it names what is wrong)
    prefix, suffix = data[: opens[0].start()], data[closes[-1].end() :]
    return kind, [prefix + data[o.start() : c.end()] + suffix for o, c in zip(opens, closes, strict=True)]


def _post(client: httpx.Client, part: bytes, kind: str, name: str, retries: int, progress: Progress) -> httpx.Response:
    content_type = "application/xml" if kind == "camt053" else "text/plain"
    for attempt in range(retries + 1):
        try:
            response = client.post(
                "/v1/statements",
                content=part,
                params={"format": kind, "filename": name},
                headers={"Content-Type": content_type},
            )
            if response.status_code not in _TRANSIENT or attempt == retries:
                return response
            reason = f"HTTP {response.status_code}"
        except httpx.TransportError as exc:
            if attempt == retries:
                raise
            reason = type(exc).__name__
        progress.note(f"retrying {name} ({reason}), attempt {attempt + 2} of {retries + 1}")
        time.sleep(min(2**attempt, 30))
    raise AssertionError("unreachable")


def _problem(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    errors = body.get("errors") or []
    fields = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in errors)
    return f"HTTP {response.status_code}: {fields or body.get('detail', '')}"


def run(args: argparse.Namespace) -> int:
    if not args.api_key:
        print("error: no API key: give --api-key or set DUNNING_API_KEY", file=sys.stderr)
        return 1
    data = args.file.read_bytes()
    kind, parts = split(data, args.format)
    progress = StatementProgress(len(parts), enabled=not args.no_progress)
    totals = {"lines": 0, **dict.fromkeys(COUNTS, 0)}
    answers: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {args.api_key}"}
    progress.update(0, totals, force=True)
    with httpx.Client(base_url=args.url, headers=headers, timeout=httpx.Timeout(300.0, connect=10.0)) as client:
        for n, part in enumerate(parts, 1):
            name = args.file.name if len(parts) == 1 else f"{args.file.name}#{n}"
            response = _post(client, part, kind, name, args.retries, progress)
            if response.status_code not in (200, 201):
                progress.finish(n - 1, totals)
                print(f"error: {name} refused, nothing of it imported: {_problem(response)}", file=sys.stderr)
                return 1
            answer = response.json()
            answers.append(answer)
            for key in totals:
                totals[key] += answer[key]
            progress.update(n, totals)
    progress.finish(len(parts), totals)
    if args.json:
        json.dump(answers, sys.stdout)
        print()
        return 0
    for answer in answers:
        for s in answer["statements"]:
            seen = " (imported before: nothing changed)" if s["duplicate"] else ""
            print(
                f"{s['statement_id']}  {s['account']}  {s['bank_statement_id']}: {s['lines']} lines, "
                f"{s['credits']} credits, matched {s['matched']}, unmatched {s['unmatched']}, "
                f"skipped {s['skipped']}, duplicate lines {s['duplicates']}{seen}"
            )
    print(
        f"total: {totals['lines']} lines, matched {totals['matched']}, unmatched {totals['unmatched']}"
        f" (GET /v1/payments?status=unmatched), skipped {totals['skipped']}, duplicate lines {totals['duplicates']}"
    )
    return 0
