"""The whole-pipeline bench's verdict on a step (bench/pipeline.py): its figures from what was
issued, stopped and what arrived, whether it held, and its line in the report."""

from collections import Counter

from dunning_tools.bench import pipeline_load as pl
from dunning_tools.bench.cancel import summary

LATENESS_LIMIT_MS = 2000.0


def judge(
    lanes: list[pl.Lane],
    lead: int,
    rate: float,
    load: pl.Load,
    got: list[pl.Arrival],
    cancelled: dict[str, float],
    s0: pl.CpuSample,
    s1: pl.CpuSample,
    client_cpu: float,
) -> dict:
    """The step's figures from what was issued, stopped and what arrived (`cancelled`: invoice id ->
    the StagesCancelled's cancelled_at)."""
    w0, w1 = s0.at, s1.at
    window = w1 - w0
    ids = {x.invoice_id: x for x in load.issued}
    by_invoice: dict[str, list[pl.Arrival]] = {}
    for a in got:
        if a.invoice_id in ids:
            by_invoice.setdefault(a.invoice_id, []).append(a)
    mine = [a for arrivals in by_invoice.values() for a in arrivals]
    expected = [x for x in load.issued if x.kind == "remind"]
    violations = late_stops = 0
    for x in load.issued:
        if x.kind == "remind" or x.acknowledged is None:
            continue
        for a in by_invoice.get(x.invoice_id, []):
            if a.scheduled >= x.acknowledged:
                violations += 1  # sent for a stage due after its payment or hold was acknowledged
            else:
                late_stops += 1  # the stop came after the stage was due (a slow client): not a race
    channel_of = {lane.tenant["tenant_id"]: lane.channel for lane in lanes}
    in_window = [a for a in mine if w0 <= a.scheduled <= w1]
    delivered = sum(1 for a in mine if w0 <= a.at <= w1)
    cancel_ms = [
        (cancelled[x.invoice_id] - x.acknowledged) * 1000
        for x in load.issued
        if x.kind == "pay" and x.acknowledged is not None and x.invoice_id in cancelled
    ]
    cores = pl.cpu_cores(s0, s1)
    per = {g: round(c * window * 1000 / delivered, 2) if delivered else None for g, c in cores.items()}
    total = sum(per[g] or 0 for g in pl.GROUPS) if delivered else None
    lateness = [(a.at - a.scheduled) * 1000 for a in in_window]
    late_by: dict[str, list[float]] = {}
    for a, ms in zip(in_window, lateness, strict=True):
        late_by.setdefault(channel_of.get(a.tenant_id, "?"), []).append(ms)
    return {
        "offered_reminders_per_s": rate,
        "achieved_reminders_per_s": round(delivered / window, 1),
        "due_reminders_per_s": round(sum(1 for x in expected if w0 <= x.answered + lead <= w1) / window, 1),
        "ingested_invoices_per_s": round(sum(1 for x in load.issued if w0 <= x.answered <= w1) / window, 1),
        "window_s": round(window, 1),
        "lateness_ms": summary(lateness),
        "lateness_p99_ms_by_channel": {ch: summary(v).get("p99") for ch, v in late_by.items()},
        "delivered_by_channel": dict(Counter(channel_of.get(a.tenant_id, "?") for a in mine)),
        "cancel_ms": summary(cancel_ms),
        "cpu_cores": cores,
        "cpu_ms_per_reminder": {**per, "total": round(total, 2) if total is not None else None},
        "bench_client_cpu_cores": round(client_cpu / window, 2),
        "invoices": len(load.issued),
        "expected": len(expected),
        "lost": sum(1 for x in expected if x.invoice_id not in by_invoice),
        "duplicates": sum(len(v) - 1 for v in by_invoice.values() if len(v) > 1),
        "sent_after_stop": violations,
        "stops": {
            "paid": sum(1 for x in load.issued if x.kind == "pay" and x.acknowledged is not None),
            "held": sum(1 for x in load.issued if x.kind == "hold" and x.acknowledged is not None),
            "failed": sum(1 for x in load.issued if x.stop_error),
            "after_the_stage_was_due": late_stops,
            "errors": [x.stop_error for x in load.issued if x.stop_error][:3],
        },
    }


def passed(step: dict) -> bool:
    lat = step["lateness_ms"]
    return (
        not step["aborted"]
        and lat.get("n", 0) > 0
        and lat["p99"] <= LATENESS_LIMIT_MS
        and step["achieved_reminders_per_s"] >= 0.9 * step["offered_reminders_per_s"]
        and step["lost"] == 0
        and step["sent_after_stop"] == 0
    )


def report_step(s: dict) -> str:
    lat, c, cores, per = s["lateness_ms"], s["cancel_ms"], s["cpu_cores"], s["cpu_ms_per_reminder"]
    services = ", ".join(f"{g} {cores[g]}" for g in ("invoice-ingest", "scheduler", "notifier", "reconciliation"))
    return (
        f"step {s['offered_reminders_per_s']:>6g}/s offered: {s['achieved_reminders_per_s']}/s delivered"
        f" ({s['ingested_invoices_per_s']} invoices/s in), lateness p50 {lat.get('p50')} ms p99 {lat.get('p99')} ms"
        f" (fired p99 {s.get('fire_lateness_ms', {}).get('p99')} ms),"
        f" cancel p99 {c.get('p99')} ms | CPU cores: services {cores['services']} ({services}),"
        f" postgresql {cores['postgresql']}, broker {cores['broker']} | ms/reminder: services {per['services']},"
        f" postgresql {per['postgresql']}, broker {per['broker']}, total {per['total']}"
        f" | per reminder: {', '.join(f'{v} {k}' for k, v in s['work_per_reminder'].items())}"
        f" | lost {s['lost']}, sent after stop {s['sent_after_stop']}, twice {s['duplicates']}"
        + (f" | CUT SHORT: {s['aborted']}" if s["aborted"] else "")
        + ("" if s["drained"] else " | NOT DRAINED")
    )
