"""`make bench`: throughput and latency of the whole system on this machine, everything local.

Starts its own stack (embedded PostgreSQL with fsync on, Tansu, SMTP server, the four services as
processes, on free ports) and measures each figure in BENCH_ROUNDS rounds (default 3; `--quick`
1), printing and saving the median with its spread (bench/figures.py, `.run/bench-system.json`):
  0. the stack's CPU at rest (nothing happening; % of one core per process group, target <= 3 %)
     and the largest service RSS at rest (steady) and after the load (<= 150 MB), see bench/rest.py
  1. invoices ingested per second through POST /v1/invoices, beside a bare FastAPI route doing one
     INSERT with the same server settings (bench/bare_api.py, bench/reference.py)
  2. invoices ingested per second through POST /v1/invoices/bulk, beside a COPY of the same rows
     into a table shaped like ingest's invoices table
     (1 and 2: two ingest replicas; the other services paused, then the time they take to catch up)
  3. payment acknowledged -> pending reminders cancelled, p50/p99, on a quiet system, then under
     load (bench/cancel.py: invoices ingested, stages firing and reminders delivered all the while)
  4. stages escalated per second, due timer -> StageEscalated on Kafka (bench/escalate.py: firing
     held until the import is planned, so its set-up can never race it)
  5. reminders delivered per second to the SMTP server
  6. the scheduler with issue 10's policies (`bench.policies`) and 7. bank statement lines matched
     (`bench.statements`), each in a process of its own (not with `--quick`)
Each phase's CPU per process group (services, postgresql, broker, stand-ins) and, in its last round,
a py-spy profile of its two busiest Python processes (.run/profiles/) are saved with the figures
(bench/phases.py; BENCH_PROFILE=0: no profiles). The same figures, medians, also go to
.run/bench.json (`--quick`: .run/bench-quick.json). Nothing here is asserted: tests never assert timings.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx
import orjson

from dunning_cli.tenants import create_tenant
from dunning_tools import loadgen
from dunning_tools.bench import figures, reference, rest
from dunning_tools.bench.cancel import bench_cancel_under_load, report_under_load, summary
from dunning_tools.bench.escalate import bench_deliver, bench_escalate
from dunning_tools.bench.figures import Figure
from dunning_tools.bench.measure import invoice
from dunning_tools.bench.phases import Phases
from dunning_tools.bench.watch import Watcher, progress, signal_services, wait_until_quiet
from dunning_tools.stack.procs import free_port, spawn, stop, wait_for_port
from dunning_tools.stack.system import Ports, Stack

N_SINGLE = int(os.environ.get("BENCH_SINGLE", 5000))
N_BULK = int(os.environ.get("BENCH_BULK", 50000))
N_CANCEL = int(os.environ.get("BENCH_CANCEL", 300))
REST_SETTLE = float(os.environ.get("BENCH_REST_SETTLE_SECONDS", 10))  # after the start, before measuring
REST_SECONDS = float(os.environ.get("BENCH_REST_SECONDS", 15))  # each round
WARM_UP = 300
CONCURRENCY = 32
DOWNSTREAM = ["scheduler", "notifier", "reconciliation"]


def line(label: str, fig: Figure, target: str = "", digits: int = 0) -> None:
    print(f"{label:<29}{fig.text(digits)}" + (f"  ({target})" if target else ""), flush=True)


async def post_singles(port: int, headers: dict, run: str, prefix: str) -> float:
    """WARM_UP invoices, then N_SINGLE more, one a request over CONCURRENCY connections; per second."""

    def requests(lo: int, hi: int) -> list[bytes]:
        return [
            loadgen.build_request("POST", "/v1/invoices", orjson.dumps(invoice(run, i, prefix=prefix)), headers)
            for i in range(lo, hi)
        ]

    await loadgen.run(port, requests(0, WARM_UP))
    batch = requests(WARM_UP, WARM_UP + N_SINGLE)
    seconds, statuses, failures = await loadgen.run(port, batch, concurrency=CONCURRENCY)
    if statuses.get(201) != N_SINGLE:
        raise SystemExit(f"single POST on port {port}: unexpected answers {statuses}: {failures[:2]}")
    return N_SINGLE / seconds


async def bench_bulk(client: httpx.AsyncClient, url: str, auth: dict, items: list[dict]) -> float:
    """Nightly-sync style: batches of 10,000, two requests in flight (one per ingest replica)."""
    batches = [items[b : b + 10000] for b in range(0, len(items), 10000)]
    bodies = [orjson.dumps({"invoices": batch}) for batch in batches]
    sem = asyncio.Semaphore(2)
    headers = {**auth, "Content-Type": "application/json"}

    async def send(body: bytes, count: int) -> None:
        async with sem:
            r = await client.post(f"{url}/v1/invoices/bulk", content=body, headers=headers, timeout=600)
        assert r.status_code == 200, r.text[:500]
        assert r.json()["summary"]["created"] == count, r.json()["summary"]

    start = time.perf_counter()
    await asyncio.gather(*(send(body, len(batch)) for body, batch in zip(bodies, batches, strict=True)))
    return len(items) / (time.perf_counter() - start)


def start_bare(stack: Stack, replicas: int) -> tuple[int, list[subprocess.Popen]]:
    """The bare FastAPI route (bench/bare_api.py), as many processes as ingest has replicas."""
    port = free_port()
    env = {**os.environ, "BARE_PORT": str(port), "DATABASE_URL": stack.database_url}
    log = stack.workdir / "logs" / "bare-api.log"
    args = [sys.executable, "-m", "dunning_tools.bench.bare_api"]
    procs = [spawn(args, env=env, log_path=log) for _ in range(replicas)]
    wait_for_port(port, proc=procs[0], what="bare FastAPI route")
    time.sleep(1)  # every replica listening
    return port, procs


async def bench_ingest(stack: Stack, phases: Phases, rounds: int) -> dict[str, Figure]:
    """Figures 1 and 2 with their references, and the downstream catch-up, round by round."""
    out = {
        "single_post_invoices_per_s": Figure("POST /v1/invoices", "invoices/s"),
        "bare_fastapi_insert_per_s": Figure("bare FastAPI route, one INSERT", "requests/s"),
        "bulk_invoices_per_s": Figure("POST /v1/invoices/bulk", "invoices/s"),
        "copy_rows_per_s": Figure("COPY of the same rows", "rows/s"),
        "downstream_catch_up_invoices_per_s": Figure("downstream catch-up", "invoices/s"),
    }
    tenant = await create_tenant(stack.database_url, "Bench Ltd")
    auth = {"Authorization": f"Bearer {tenant['api_key']}"}
    headers = {**auth, "Content-Type": "application/json"}
    ingest = stack.url("invoice-ingest")
    ingest_port = int(ingest.rsplit(":", 1)[1])
    await reference.prepare(stack.database_url)
    bare_port, bare = start_bare(stack, sum(1 for sp in stack.procs if sp.name == "invoice-ingest"))
    conn = await asyncpg.connect(stack.database_url)  # the COPY's: its backend lives through every phase
    try:
        for r in range(rounds):
            last = r == rounds - 1
            # The ingest API's own capacity: the downstream services are paused (SIGSTOP) while it
            # is measured; Kafka holds what they have to do, and they catch up afterwards.
            _, consumed_before = await progress(stack)
            signal_services(stack, DOWNSTREAM, signal.SIGSTOP)
            try:
                run = uuid.uuid4().hex[:6]
                async with phases.phase("single_post", profile=last):
                    single = await post_singles(ingest_port, headers, run, "S")
                out["single_post_invoices_per_s"].rounds.append(round(single))
                async with phases.phase("bare_fastapi", profile=last):
                    bare_rate = await post_singles(bare_port, headers, run, "R")
                out["bare_fastapi_insert_per_s"].rounds.append(round(bare_rate))
                items = [invoice(run, i) for i in range(N_BULK)]
                async with httpx.AsyncClient(timeout=600) as client, phases.phase("bulk", profile=last):
                    bulk = await bench_bulk(client, ingest, auth, items)
                out["bulk_invoices_per_s"].rounds.append(round(bulk))
                records = reference.rows(tenant["tenant_id"], items)
                async with phases.phase("copy"):
                    copied = await reference.copy_rows_per_s(conn, records)
                out["copy_rows_per_s"].rounds.append(round(copied))
            finally:
                signal_services(stack, DOWNSTREAM, signal.SIGCONT)
            # Each invoice is one inbox row at least in scheduler and reconciliation (InvoiceIssued)
            # and in invoice-ingest (DunningPlanned).
            total = WARM_UP + N_SINGLE + N_BULK
            async with phases.phase("catch_up", profile=last):
                seconds = await wait_until_quiet(stack, consumed_at_least=consumed_before + 3 * total)
            out["downstream_catch_up_invoices_per_s"].rounds.append(round(total / seconds))
            print(
                f"  round {r + 1}: POST /v1/invoices {single:,.0f}/s, bare route {bare_rate:,.0f}/s;"
                f" bulk {bulk:,.0f}/s, COPY {copied:,.0f}/s; catch-up {total / seconds:,.0f}/s",
                flush=True,
            )
    finally:
        await conn.close()
        for proc in bare:
            stop(proc)
    return out


async def cancel_round(stack: Stack, client: httpx.AsyncClient) -> dict:
    """Settle invoices one by one while their stages are pending; the latencies come from the events."""
    tenant = await create_tenant(stack.database_url, "Bench Cancel Ltd")
    auth = {"Authorization": f"Bearer {tenant['api_key']}"}
    run = uuid.uuid4().hex[:6]
    items = [invoice(run, i) for i in range(N_CANCEL)]
    async with (
        Watcher(stack.kafka_bootstrap_servers, "dunning.stages.v1") as stages,
        Watcher(stack.kafka_bootstrap_servers, "dunning.payments.v1") as payments,
    ):
        url = f"{stack.url('invoice-ingest')}/v1/invoices/bulk"
        (await client.post(url, json={"invoices": items}, headers=auth)).raise_for_status()
        await stages.wait_for("dunning.DunningPlanned.v1", tenant["tenant_id"], N_CANCEL)
        await asyncio.sleep(1)
        for i, item in enumerate(items):  # ~50 payments a second, as a busy payment processor would send
            r = await client.post(
                f"{stack.url('reconciliation')}/v1/payments",
                headers=auth,
                json={
                    "invoice_external_id": item["external_id"],
                    "amount": item["amount_due"],
                    "currency": item["currency"],
                    "received_at": datetime.utcnow().isoformat() + "Z",
                    "reference": f"PAY-{run}-{i}",
                },
            )
            assert r.status_code == 201, r.text
            await asyncio.sleep(0.02)
        await stages.wait_for("dunning.StagesCancelled.v1", tenant["tenant_id"], N_CANCEL, timeout=60)
        await payments.wait_for("dunning.PaymentReceived.v1", tenant["tenant_id"], N_CANCEL)
        return summary(cancel_latencies(payments, stages, tenant["tenant_id"]))


def cancel_latencies(payments: Watcher, stages: Watcher, tenant_id: str) -> list[float]:
    acked = {
        e["data"]["invoice_id"]: datetime.fromisoformat(e["data"]["acknowledged_at"])
        for _, e in payments.of("dunning.PaymentReceived.v1", tenant_id)
    }
    out = []
    for _, e in stages.of("dunning.StagesCancelled.v1", tenant_id):
        inv = e["data"]["invoice_id"]
        if inv in acked:
            out.append((datetime.fromisoformat(e["data"]["cancelled_at"]) - acked[inv]).total_seconds() * 1000)
    return out


def _percentiles(out: dict[str, Figure], key: str, what: str, s: dict) -> None:
    for q in ("p50", "p99"):
        out.setdefault(f"cancel_{q}_ms_{key}", Figure(f"payment ack -> cancelled {q}, {what}", "ms"))
        if s.get("n"):
            out[f"cancel_{q}_ms_{key}"].rounds.append(s[q])


async def bench_cancel(stack: Stack, phases: Phases, rounds: int, details: dict) -> dict[str, Figure]:
    out: dict[str, Figure] = {}
    load_keys = {
        "under_load_invoices_ingested_per_s": ("invoices_ingested_per_s", "invoices/s"),
        "under_load_stages_fired_per_s": ("stages_fired_per_s", "stages/s"),
        "under_load_emails_per_s": ("emails_per_s", "mails/s"),
        "under_load_stack_cpu_cores": ("stack_cpu_cores", "cores"),
    }
    # Idle connections let go before uvicorn's 5 s keep-alive closes them under a request.
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(keepalive_expiry=2)) as client:
        for _ in range(rounds):
            async with phases.phase("cancel_quiet"):
                quiet = await cancel_round(stack, client)
            _percentiles(out, "quiet", "quiet", quiet)
            details.setdefault("cancel_latency_ms", []).append(quiet)
            print(
                f"payment ack -> cancelled   p50 {quiet.get('p50')} ms, p99 {quiet.get('p99')} ms,"
                f" max {quiet.get('max')} ms over {quiet['n']}",
                flush=True,
            )
            await wait_until_quiet(stack)
        for r in range(rounds):
            window = phases.phase("cancel_under_load", profile=r == rounds - 1)
            loaded = await bench_cancel_under_load(stack, client, window=window)
            report_under_load(loaded)
            _percentiles(out, "under_load", "under load", loaded["cancel_latency_under_load_ms"])
            for key, (field, unit) in load_keys.items():
                out.setdefault(key, Figure(f"under load: {field}", unit)).rounds.append(
                    loaded["cancel_under_load"][field]
                )
            for k, v in loaded.items():
                details.setdefault(k, []).append(v)
            await wait_until_quiet(stack)
    return out


async def bench_at_rest(phases: Phases, rounds: int, details: dict) -> dict[str, Figure]:
    cpu = Figure("stack CPU at rest", "% of one core", note=f"windows of {REST_SECONDS:g} s")
    rss = Figure("largest service RSS at rest", "MB")
    for _ in range(rounds):
        async with phases.phase("at_rest"):
            reading = await asyncio.to_thread(rest.cpu_at_rest, REST_SECONDS)
        print(rest.report_at_rest(reading), flush=True)
        cpu.rounds.append(reading["total_pct_of_a_core"])
        by_service = rest.rss_by_service()
        rss.rounds.append(max(by_service.values(), default=0.0))
        details.setdefault("at_rest", []).append(reading)
        details.setdefault("rss_mb_at_rest", []).append(by_service)
    print(rest.report_rss("at rest", details["rss_mb_at_rest"][-1]), flush=True)
    return {"at_rest_cpu_pct": cpu, "rss_max_mb": rss}


async def main_async(stack: Stack, rounds: int, phases: Phases) -> tuple[dict[str, Figure], dict]:
    details: dict = {}
    figs: dict[str, Figure] = {}
    # 0. The stack's own cost with nothing to do: started, settled, then measured (rest.py).
    await asyncio.sleep(REST_SETTLE)
    figs.update(await bench_at_rest(phases, rounds, details))
    figs.update(await bench_ingest(stack, phases, rounds))
    for key, label, target in (
        ("single_post_invoices_per_s", "POST /v1/invoices", "target >= 1,000"),
        ("bare_fastapi_insert_per_s", "  bare FastAPI INSERT", "reference: >= 60 % of it"),
        ("bulk_invoices_per_s", "POST /v1/invoices/bulk", "target >= 20,000"),
        ("copy_rows_per_s", "  COPY of the same rows", "reference: >= 40 % of it"),
        ("downstream_catch_up_invoices_per_s", "downstream catch-up", ""),
    ):
        line(label, figs[key], target)
    print_ratio("POST /v1/invoices / bare route", figs["single_post_invoices_per_s"], figs["bare_fastapi_insert_per_s"])
    print_ratio("bulk import / COPY", figs["bulk_invoices_per_s"], figs["copy_rows_per_s"])
    await wait_until_quiet(stack)
    figs.update(await bench_cancel(stack, phases, rounds, details))
    line("payment ack -> cancelled", figs["cancel_p99_ms_quiet"], "p99, quiet; target <= 250 ms", 1)
    line("  ... under load", figs["cancel_p99_ms_under_load"], "p99; target <= 100 ms", 1)
    async with httpx.AsyncClient(timeout=60) as client:
        figs["escalated_stages_per_s"] = await bench_escalate(stack, client, phases, rounds)
    line("due timer -> StageEscalated", figs["escalated_stages_per_s"], "target >= 5,000")
    figs["reminders_delivered_per_s"] = await bench_deliver(stack, phases, rounds)
    line("reminders -> SMTP server", figs["reminders_delivered_per_s"])
    after = rest.rss_by_service()
    details["rss_mb_after_load"] = after
    figs["rss_max_mb_after_load"] = Figure("largest service RSS after the load", "MB", [max(after.values(), default=0)])
    print(rest.report_rss("after", after), flush=True)
    return figs, details


def print_ratio(label: str, figure: Figure, reference_figure: Figure) -> None:
    r = figures.ratio(figure, reference_figure)
    print(f"  {label}: {'none' if r is None else f'{r:.2f}'} (medians)", flush=True)


def run_sub_bench(module: str, what: str) -> list[str]:
    print(f"\n{what} (python -m {module}) ...", flush=True)
    done = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True, check=False)
    print(done.stdout + (done.stderr[-2000:] if done.returncode else ""), flush=True)
    return done.stdout.splitlines()


def run_stack(rounds: int) -> tuple[dict[str, Figure], dict]:
    """Every whole-stack figure, `rounds` rounds each, saved to .run/bench-system.json; (figures, details)."""
    phases = Phases(figures.RUN_DIR / "profiles", profile=os.environ.get("BENCH_PROFILE", "1") != "0")
    workdir = Path(tempfile.mkdtemp(prefix="dunning-bench-"))
    # Two ingest replicas share the port (SO_REUSEPORT), as two pods behind a Service would.
    stack = Stack(workdir, Ports.free(), durable=True, replicas={"invoice-ingest": 2})
    print(f"starting the stack in {workdir} ({rounds} round(s) a figure) ...", flush=True)
    started = time.monotonic()
    try:
        stack.start_infrastructure()
        stack.start_services()
        figs, details = asyncio.run(main_async(stack, rounds, phases))
    finally:
        stack.stop()
    print("\nCPU per phase (all rounds), % of one core by process group:", flush=True)
    print("\n".join(phases.lines()), flush=True)
    extra = {
        "rounds": rounds,
        "seconds": round(time.monotonic() - started, 1),
        "cpu_by_phase": phases.report(),
        "profiles": phases.profiles,
        "profile_problems": phases.problems,
        "details": details,
    }
    print(f"figures: {figures.save('system', figs, extra)} (the stack's phases took {extra['seconds']} s)", flush=True)
    return figs, details


def main() -> None:
    quick = "--quick" in sys.argv[1:]  # make bench-quick: the whole-stack phases only, smaller (Makefile)
    figs, details = run_stack(1 if quick else figures.ROUNDS)
    results: dict = {key: fig.median for key, fig in figs.items()}
    results["rounds"] = {key: fig.rounds for key, fig in figs.items()}
    results |= details
    if quick:
        _save(results, "bench-quick.json")
        return
    results["policies"] = run_sub_bench("dunning_tools.bench.policies", "the scheduler with policies in force")
    results["statements"] = run_sub_bench("dunning_tools.bench.statements", "bank statement lines matched")
    _save(results, "bench.json")


def _save(results: dict, name: str) -> None:
    """The run's medians and details, as make bench always wrote them (.run/bench.json)."""
    figures.RUN_DIR.mkdir(parents=True, exist_ok=True)
    path = figures.RUN_DIR / name
    path.write_text(json.dumps(results, indent=2))
    print(f"results: {path}", flush=True)


if __name__ == "__main__":
    main()
