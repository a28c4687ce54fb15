"""Bank statement lines matched per second (issue 11; target >= 10,000/s on this machine).

    python -m dunning_tools.bench.statements [--invoices 20000] [--lines 20000] [--customers 2000] [--runs 3] [--quick]
        [--chunk 5000] [--allocation-run 5000]

Reconciliation's schema on its own PostgreSQL (embedded unless DATABASE_URL): N invoices issued
through its real consumer path (InvoiceIssued, the batch handlers), a third of the customers with a
payer account already learnt (payer_accounts), then ONE CAMT.053 of M credit lines imported through
the real import (`statements_import.import_statement`: parse, payments, matching, allocation,
customer credit, outbox), timed from the bytes to the committed end, with where the time goes
(dunning_reconciliation.stopwatch; each second counted once):
  parse     reading the file (CAMT.053 -> lines),
  store     the statement's own rows (line keys, lines, progress) and its transactions,
  match     the candidate queries and the rules (allocation runs written meanwhile overlap it),
  allocate  waiting for payments, allocations, balances, credit, events and the queue to be written,
  other     the rest.
The lines mix:
  - 40 % an invoice number in the remittance (one in ten naming two invoices),
  - 10 % an ISO 11649 RF creditor reference (the invoice's, `matching.creditor_reference_for`),
  - 30 % no reference, from a known payer account, with the exact open amount of one invoice,
  - 20 % no reference, an unknown payer and an amount no invoice has (the unmatched queue).
Runs on uvloop, the event loop the service runs on (dunning.runtime). Prints lines/s, the CPU
seconds of this process and of PostgreSQL (embedded server only) during the import, and the split by
matching rule and status. Figures only: nothing asserted. `--runs` defaults to BENCH_ROUNDS (3); each
run's rate is a round of the figure `lines_per_s` saved to .run/bench-statements.json (bench.figures),
with each run's CPU seconds beside it. `--quick`: 2,000 lines against 2,000 invoices, one run.
`--chunk` (lines per transaction) and `--allocation-run` (decided payments written per run while the
next are decided) measure the import's two sizes on another setting (defaults: the service's).
"""

import argparse
import contextlib
import gc
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import uvloop

from dunning import tenancy
from dunning.clock import utcnow
from dunning.contracts import InvoiceIssued, topic
from dunning.db import create_pool, migrate, migrations_of
from dunning.events import new_event
from dunning.ids import new_id
from dunning.logging import configure_logging
from dunning.tracing import configure_tracing
from dunning_tools.bench import figures
from dunning_tools.bench.measure import postgres_cpu
from dunning_tools.stack.servers import database
from dunning_tools.testing.runner import feed, records, runner_on
from dunning_tools.testing.statements import Line, camt053

TENANT = "ten_bench_statements"
SHARES = (("reference", 0.40), ("creditor_reference", 0.10), ("payer_account_amount", 0.30), ("unmatched", 0.20))


def iban(n: int) -> str:
    """A valid German IBAN for account number `n` (mod-97 check digits computed)."""
    bban = f"37040044{n:010d}"
    digits = "".join(str(int(c, 36)) for c in bban + "DE00")
    return f"DE{98 - int(digits) % 97:02d}{bban}"


def invoices(n: int, customers: int) -> list[dict]:
    """InvoiceIssued envelopes: each customer's invoices have amounts of their own (cents differ)."""
    now = utcnow()
    out = []
    for i in range(n):
        c = i % customers
        due = now.date() - timedelta(days=60) + timedelta(days=i // customers)
        invoice_id = new_id("inv")
        data = {
            "invoice_id": invoice_id,
            "tenant_id": TENANT,
            "external_id": f"ERP-{i:07d}",
            "number": f"INV-{i:07d}",
            "customer": {
                "customer_id": f"cus_bench{c:08d}",
                "external_id": f"c-{c}",
                "name": f"Kunde {c} GmbH",
                "email": f"ap-{c}@example.com",
                "locale": "de-DE",
                "timezone": "Europe/Berlin",
            },
            "currency": "EUR",
            "amount_due": f"{100 + c % 800}.{(i // customers) % 100:02d}",
            "issue_date": due - timedelta(days=30),
            "due_date": due,
            "payment_url": f"https://pay.example.com/i/{i}",
            "metadata": {},
            "issued_at": now,
        }
        out.append(new_event(InvoiceIssued.TYPE, data, source="/invoice-ingest", subject=invoice_id, tenant_id=TENANT))
    return out


def statement_lines(issued: list[dict], customers: int, lines: int, rng: random.Random) -> tuple[list[Line], dict]:
    """The credit lines (each invoice paid at most once) and how many of each kind were written."""
    from dunning_reconciliation.matching import creditor_reference_for

    data = [e["data"] for e in issued]
    learnt = set(range(0, customers, 3))  # payer_accounts rows: their invoices are paid by amount only
    by_customer: dict[int, list[dict]] = {c: [] for c in learnt}
    free: list[dict] = []
    for i, d in enumerate(data):
        (by_customer[i % customers] if i % customers in learnt else free).append(d)
    rng.shuffle(free)
    out: list[Line] = []
    written = {k: 0 for k, _ in SHARES}
    for n in range(lines):
        roll, kind = rng.random(), "unmatched"
        for name, share in SHARES:
            if roll < share:
                kind = name
                break
            roll -= share
        if kind == "payer_account_amount":
            c = rng.choice(sorted(learnt))
            d = by_customer[c].pop() if by_customer[c] else None
            if d is None:
                kind = "unmatched"
            else:
                out.append(Line(Decimal(d["amount_due"]), "", d["customer"]["name"], iban(c)))
        if kind in ("reference", "creditor_reference"):
            picks = [free.pop() for _ in range(2 if kind == "reference" and n % 10 == 0 else 1) if free]
            total = sum((Decimal(d["amount_due"]) for d in picks), Decimal(0))
            reference = creditor_reference_for(picks[0]["number"]) if kind == "creditor_reference" else None
            if reference:
                out.append(Line(total, "", picks[0]["customer"]["name"], creditor_reference=reference))
            else:
                kind = "reference"
                words = " ".join(d["number"] for d in picks)
                out.append(Line(total, f"Rechnung {words} vielen Dank", picks[0]["customer"]["name"]))
        if kind == "unmatched":
            out.append(
                Line(
                    Decimal(f"{rng.randrange(1, 99)}.{rng.randrange(100):02d}"),
                    "Sammelzahlung",
                    f"Unbekannt {n}",
                    iban(10**9 + n),
                )
            )
        written[kind] += 1
    return out, written


async def bench(
    dsn: str,
    n_invoices: int,
    n_lines: int,
    customers: int,
    seed: int,
    pg_dir: Path | None,
    chunk: int | None = None,
) -> tuple[float, float, float]:
    """One run on a fresh schema; prints its figures and returns (lines/s, this process's CPU
    seconds, PostgreSQL's)."""
    from dunning_reconciliation import statements_import
    from dunning_reconciliation.handlers import HANDLERS
    from dunning_reconciliation.stopwatch import timing

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    migrate(dsn, schema, migrations_of("dunning_reconciliation"))
    pool = await create_pool(dsn, schema, max_size=4)
    try:
        async with pool.acquire() as conn:
            await tenancy.provision(conn, TENANT, "Bench", f"dk_bench_statements_{uuid.uuid4().hex}")
        issued = invoices(n_invoices, customers)
        runner = runner_on(pool, HANDLERS, name="statements-bench", handler_attempts=3)
        await feed(runner, records(issued, topic=topic(InvoiceIssued)), 1000)
        if runner.dead_lettered:
            raise SystemExit(f"statements bench: {runner.dead_lettered} invoices dead-lettered")
        await pool.executemany(
            "INSERT INTO payer_accounts (tenant_id, account, customer_id, learned_from_payment_id, learned_at)"
            " VALUES ($1, $2, $3, 'pay_bench', now()) ON CONFLICT DO NOTHING",
            [(TENANT, iban(c), f"cus_bench{c:08d}") for c in range(0, customers, 3)],
        )
        await pool.execute("ANALYZE")
        lines, written = statement_lines(issued, customers, n_lines, random.Random(seed))
        document = camt053(lines, statement_id=f"BENCH-{uuid.uuid4().hex[:8]}")
        # the bench's own objects (20,000 issued envelopes, the lines) are not the service's heap:
        # dropped, so that the import's garbage collections walk only what a service would hold
        del issued, lines, runner
        gc.collect()
        steps: dict[str, float] = {}
        start, cpu, pg = time.perf_counter(), time.process_time(), postgres_cpu(pg_dir)
        with timing(steps):
            result = await statements_import.import_statement(
                pool, TENANT, document, filename="bench.xml", chunk=chunk or statements_import.CHUNK
            )
        elapsed = time.perf_counter() - start
        cpu, pg = time.process_time() - cpu, postgres_cpu(pg_dir) - pg
        split = await pool.fetch(
            "SELECT coalesce(match_rule, '-') AS rule, status, count(*) AS n FROM payments"
            " WHERE tenant_id = $1 AND source = 'bank_statement' GROUP BY 1, 2 ORDER BY 3 DESC",
            TENANT,
        )
        counts = {k: result.get(k) for k in ("lines", "credits", "matched", "unmatched", "skipped", "duplicates")}
        print(
            f"statement import: {n_lines} credit lines (CAMT.053, {len(document) / 1e6:.1f} MB)"
            f" against {n_invoices} invoices of {customers} customers"
        )
        print(
            f"  statement lines matched per second   {n_lines / elapsed:>10,.0f} lines/s"
            f"  ({elapsed:.2f} s, target >= 10,000/s)"
        )
        steps["other"] = max(elapsed - sum(steps.values()), 0.0)
        print(
            "  where the time goes: "
            + ", ".join(f"{k} {steps.get(k, 0.0):.2f} s" for k in ("parse", "store", "match", "allocate", "other"))
        )
        if pg_dir:
            print(f"  cpu during the import: this process {cpu:.2f} s, PostgreSQL {pg:.2f} s ({elapsed:.2f} s wall)")
        print("  lines written as: " + ", ".join(f"{k} {v}" for k, v in written.items()))
        print(f"  import answered: {counts}")
        print("  payments by rule and status: " + ", ".join(f"{r['rule']}/{r['status']} {r['n']}" for r in split))
        await pool.execute(f"DROP SCHEMA {schema} CASCADE")
        return n_lines / elapsed, cpu, pg
    finally:
        await pool.close()


async def runs(args: argparse.Namespace, dsn: str, pg_dir: Path | None) -> None:
    """`--runs N` runs, each on its own schema; with several, the median of each figure (a shared
    machine's noise: compare CPU seconds as well as lines/s)."""
    if args.allocation_run:
        from dunning_reconciliation.match_service import _Allocator

        _Allocator.RUN = args.allocation_run
    measured = []
    for _ in range(args.runs):
        measured.append(await bench(dsn, args.invoices, args.lines, args.customers, args.seed, pg_dir, args.chunk))
    if args.runs > 1:
        rate, cpu, pg = (statistics.median(column) for column in zip(*measured, strict=True))
        print(
            f"median of {args.runs} runs: {rate:,.0f} lines/s; cpu this process {cpu:.2f} s"
            + (f", PostgreSQL {pg:.2f} s" if pg_dir else "")
        )
    figure = figures.Figure(
        "statement lines matched per second",
        "lines/s",
        [rate for rate, _, _ in measured],
        note=f"{args.lines} CAMT.053 credit lines against {args.invoices} invoices; target >= 10,000/s",
    )
    cpu = {
        "lines": args.lines,
        "python_s": [cpu for _, cpu, _ in measured],
        "postgres_s": [pg for _, _, pg in measured] if pg_dir else None,
    }
    figures.save("statements", {"lines_per_s": figure}, extra={"cpu": cpu})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invoices", type=int, default=20000)
    parser.add_argument("--lines", type=int, default=20000)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--runs", type=int, default=figures.ROUNDS, help="runs of the import (BENCH_ROUNDS); several print the medians"
    )
    parser.add_argument("--quick", action="store_true", help="2,000 lines against 2,000 invoices, one run")
    parser.add_argument("--chunk", type=int, help="lines per transaction (default: the import's CHUNK)")
    parser.add_argument("--allocation-run", type=int, help="payments per allocation run (default: match_service's RUN)")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args()
    if args.quick:
        args.invoices, args.lines, args.customers, args.runs = 2000, 2000, 200, 1
    with contextlib.redirect_stderr(open(os.devnull, "w")):
        configure_logging("statements-bench", args.log_level)
    configure_tracing("statements-bench", "none")
    workdir = Path(tempfile.mkdtemp(prefix="statements-bench-"))
    try:
        with database(workdir) as db:
            uvloop.run(runs(args, db.dsn, db.data_dir))  # the service's loop (dunning.runtime)
    finally:
        sys.stdout.flush()


if __name__ == "__main__":
    main()
