"""`make chaos`: the dunning promises, checked on the whole stack while it is being broken.

Promises under test (from what the providers received: the SMTP server, the Twilio stand-in and the
webhook receiver (chaos.channels: the policy sends soft by SMS and firm by webhook), and the services'
public APIs only):
  1. no reminder while a stop is in force: once a payment, credit note, void, write-off, hold (on the
     invoice or its customer), dispute, promise or payment plan is acknowledged (answered 2xx), no
     reminder of that invoice scheduled at or after the acknowledgement fires until the stop ends
     (a release, an expiry, a rejection, a broken promise or plan; never, for a settling stop);
  2. none lost: every stage owed is sent once services are back, including the stages owed after
     a hold is released or expires, a dispute is rejected, a promise or a plan is broken (and the
     `promise_broken` reminder); a fired stage never received is explained only by the notifier's
     ReminderCancelled in the invoice's timeline;
  3. none twice: one delivery per (invoice, stage, channel), except inside the notifier's named
     provider window (died after SMTP 250, before recording `sent`), which its deliveries API shows
     as `in_doubt_attempts >= 1`;
  4. every timeline read (every raced invoice's and a sample) shows sent what the SMTP server received;
  5. bounded lateness (p99 < 2 s when healthy): reported, never asserted.

A run: its own stack (embedded PostgreSQL and Tansu unless DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS
are set; free ports; workdir .run/chaos/<run>) with 2 replicas of every service. Invoices are
issued in bulk every 0.5 s over the first half of `duration`; a policy with four stages `gap` =
duration/6 apart (the first 8 s after issue) makes their stages fall due over about `duration`
seconds. For `race_share` of them a stop of one kind (dunning_tools.chaos.stops; what follows a
pause: chaos.pauses) is aimed to be acknowledged within +-50 ms of one of the invoice's stage times,
sent early by the acknowledgement latency the stack shows now (chaos.aim); the full run fails if a
kind's share within +-50 ms is under 80 % (the short one reports it: see chaos.aim.Aim.judged). The
default load (1,500 invoices, email + SMS + webhook) is what this 2-core machine sustains.
In the middle of the run a random service process is SIGKILLed every `kill_every` seconds and
restarted shortly after, reconciliation's outbox relay is paused for `relay_pause` seconds
(`dunning relay pause|resume --service reconciliation`), and
PostgreSQL and the broker are each SIGKILLed and started again (chaos.infra; not in --short). The
first and last parts of the run are calm, so that some stages fall due on a healthy system. Beside
the main tenant, under the same faults: issue 10's policy races (chaos.policies) and issue 11's money
races (chaos.money: card payments raced against a stage, then refunded or charged back and lost at
the next stage's time, reopening the invoice; none sent while it was settled, none of a reopened
invoice's owed stages lost, none twice) and the agency hand-off's races (chaos.agency: the agency's
acknowledgement, which hands the invoice over and stops it `with_agency`, aimed at a stage; nothing
after the stop but the `handed_over` notice, once). Then it
waits for quiescence and checks (chaos.checks, chaos.verdicts); the figures go to stdout and
<workdir>/report.json (payments.json, every raced stop, next to it). Exit status 1 on any violation,
lost stage, unexplained duplicate, timeline differing from the mail, or kind raced under 80 %.
"""

import argparse
import asyncio
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from dunning_cli.tenants import create_tenant
from dunning_tools.chaos import agency, aim, channels, checks, infra, money_checks, pauses, stops
from dunning_tools.chaos.aim import Aim
from dunning_tools.chaos.checks import STAGES, ts
from dunning_tools.chaos.money import MoneyRaces
from dunning_tools.chaos.policies import PolicyRaces
from dunning_tools.chaos.stops import Stop
from dunning_tools.stack.service import ServiceProc
from dunning_tools.stack.system import Ports, Stack
from dunning_tools.testing.story import invoice_body

LEAD = 8.0  # issue -> first stage: the invoice is planned well before anything falls due
BATCH_EVERY = 0.5  # one bulk import every half second (every 0.1 s: five times the requests, and ingest fell behind)
REPLICAS = {"invoice-ingest": 2, "scheduler": 2, "notifier": 2, "reconciliation": 2}


@dataclass
class Config:
    invoices: int = 1_500  # what this 2-core machine sustains with three channels and keeps the aim (README)
    duration: float = 240.0  # stages fall due over about this many seconds
    kill_every: tuple[float, float] = (3.0, 6.0)  # (0, 0): no kills
    restart_after: tuple[float, float] = (0.5, 2.0)
    relay_pause: float = 20.0  # 0: no pause
    race_share: float = 0.35
    healthy_margin: float = 10.0  # seconds after a fault still counted as its window
    quiesce_timeout: float = 240.0
    notifier_lease: float = 20.0  # NOTIFIER_LEASE_SECONDS (default 120 s) for the run
    infra_faults: bool = True  # SIGKILL PostgreSQL and the broker (each at least once) in the kill window
    judge_aim: bool = True  # a kind of stop under 80 % within +-50 ms fails the run (chaos.aim.Aim.judged)
    infra_every: float = 120.0  # one of each per this many seconds of the kill window
    infra_down_for: tuple[float, float] = (1.0, 3.0)
    tail: float = 90.0  # seconds after the last stage a promise or plan may still break (else it is kept)
    policy_customers: int = 40  # per kind of issue 10's races (notice, window, cap; chaos.policies); 0: none
    money_customers: int = 40  # issue 11's refunds and chargebacks that reopen (chaos.money); 0: none
    agency_customers: int = (
        60  # invoices of the agency hand-off races (chaos.agency; ~60 % raced, enough to judge 80 %); 0: none
    )
    seed: int = 1
    workdir: Path = Path(".run/chaos")
    keep_data: bool = False

    @property
    def gap(self) -> float:
        return self.duration / 6

    @property
    def spread(self) -> float:
        return self.duration / 2

    @property
    def offsets(self) -> list[float]:
        return [LEAD + k * self.gap for k in range(len(STAGES))]

    @property
    def kill_window(self) -> tuple[float, float]:  # seconds after the first import
        return LEAD + 0.1 * self.duration, LEAD + self.duration - max(15.0, 0.2 * self.duration)

    @property
    def pause_at(self) -> float:
        lo, hi = self.kill_window
        return max(lo, (lo + hi - self.relay_pause) / 2)


SHORT = {
    "invoices": 600,
    "duration": 40.0,
    "kill_every": (4.0, 6.0),
    "relay_pause": 8.0,
    "quiesce_timeout": 100.0,
    "infra_faults": False,
    "judge_aim": False,
    "tail": 30.0,
    "policy_customers": 15,
    "money_customers": 12,
    "agency_customers": 10,
}


@dataclass
class Invoice:
    index: int
    external_id: str
    email: str
    amount: str
    id: str | None = None
    issued_at: float | None = None  # epoch seconds (ingest's created_at, which is the issued_at)
    race: tuple[int, float, str] | None = None  # (stage index, delta seconds, a kind of stops.KINDS)
    outcome: str | None = None  # what follows a pause (pauses.OUTCOMES)
    due_date: date = date.today() + timedelta(days=30)
    timezone: str = "Europe/London"
    promised_date: date | None = None  # a promise's date, a plan's first due date (pauses.plan_deadline)
    promise_by: bool = False  # a promise made `by` an instant, not by a day (pauses.plan_deadline)
    deadline: float | None = None


@dataclass
class Fault:
    kind: str  # kill | crash | relay_pause
    target: str  # e.g. scheduler#1
    start: float
    restarted_at: float | None = None
    end: float | None = None  # restarted process logged service.started / relay resumed
    detail: str = ""


async def sleep_until(epoch: float) -> None:
    delay = epoch - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


class Run:
    def __init__(self, cfg: Config, stack: Stack):
        self.cfg = cfg
        self.stack = stack
        self.rng = random.Random(cfg.seed)
        self.run_id = f"{cfg.seed}-{os.urandom(3).hex()}"
        self.invoices = [self._invoice(i) for i in range(cfg.invoices)]
        self.payments: list[Stop] = []  # every raced stop: payments, credit notes, voids, write-offs
        self.pay_tasks: list[asyncio.Future] = []
        self.faults: list[Fault] = []
        self.notes: list[str] = []
        self.down: set[int] = set()  # ids of processes we killed and have not restarted yet
        self.aim = Aim(judged=cfg.judge_aim)  # per kind of stop: request sent -> acknowledged_at, recent
        # Requests in flight, bounded below the client's connections: when the services slow down,
        # callers queue here (cheap) rather than in httpx's pool, whose wait queue costs CPU per waiter.
        self.inflight = asyncio.Semaphore(48)
        self.relay: dict[str, Any] = {"requested": cfg.relay_pause > 0, "paused": False}
        self.idempotency_stuck = 0
        self.t0 = 0.0
        self.tenant: dict = {}
        self.client: httpx.AsyncClient | None = None

    def _invoice(self, i: int) -> Invoice:
        inv = Invoice(i, f"CH-{self.run_id}-{i}", f"ap-{self.run_id}-{i}@example.com", f"{100 + i % 900}.{i % 100:02d}")
        if self.rng.random() < self.cfg.race_share:
            inv.race = (
                self.rng.randrange(len(STAGES)),
                stops.aim_delta(self.rng),
                stops.pick_kind(self.rng),
            )
            inv.outcome = pauses.outcome_of(self.rng, inv.race[2])
        return inv

    @property
    def horizon(self) -> float:
        """Until when a promise or plan may break and still have its resumed stages sent in the run."""
        return self.t0 + self.cfg.spread + self.cfg.offsets[-1] + self.cfg.tail

    sleep_until = staticmethod(sleep_until)

    @property
    def auth(self) -> dict:
        return {"Authorization": f"Bearer {self.tenant['api_key']}"}

    def log(self, text: str) -> None:
        elapsed = time.time() - self.t0 if self.t0 else 0.0
        print(f"[{elapsed:7.1f}s] {text}", flush=True)

    # -- HTTP with retries (what a well-behaved client does when a replica dies under it) ---------
    async def send(self, make, *, retry_statuses=(500, 502, 503, 504), deadline: float = 120.0, queue=True):
        """make(attempt) -> the response of one attempt; retried on connection errors and retry_statuses
        (at least three attempts, then until `deadline` seconds have passed). A raced stop's first
        attempt does not queue behind the others (queue=False): it is timed."""
        give_up = time.monotonic() + deadline
        attempt, delay = 0, 0.05
        while True:
            attempt += 1
            try:
                if queue or attempt > 1:
                    async with self.inflight:
                        r = await make(attempt)
                else:
                    r = await make(attempt)
                if r.status_code not in retry_statuses:
                    return r, attempt
                failure = f"HTTP {r.status_code}"
            except httpx.TransportError as exc:
                failure = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > give_up and attempt >= 3:
                raise RuntimeError(f"gave up after {attempt} attempts: {failure}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def get(self, url: str, **params) -> httpx.Response:
        client = self.client
        assert client is not None, "the run's HTTP client is not open"
        r, _ = await self.send(lambda _: client.get(url, params=params or None, headers=self.auth))
        return r

    # -- workload ---------------------------------------------------------------------------------
    async def issue_batch(self, batch: list[Invoice], number: int) -> None:
        url = f"{self.stack.url('invoice-ingest')}/v1/invoices/bulk"
        body = orjson.dumps({"invoices": [self._body(inv) for inv in batch]})
        key = f"chaos-{self.run_id}-{number}"
        stuck_since: list[float] = []

        async def attempt(_):
            headers = {**self.auth, "Content-Type": "application/json"}
            if not stuck_since or time.monotonic() - stuck_since[0] < 10:
                headers["Idempotency-Key"] = key  # dropped only if a dead request holds it (external ids still dedupe)
            r = await self.client.post(url, content=body, headers=headers)
            if r.status_code == 409 and not stuck_since:
                stuck_since.append(time.monotonic())
            return r

        r, _ = await self.send(attempt, retry_statuses=(409, 500, 502, 503, 504), deadline=120)
        if stuck_since and time.monotonic() - stuck_since[0] >= 10:
            self.idempotency_stuck += 1
        if r.status_code != 200:
            raise RuntimeError(f"bulk import answered {r.status_code}: {r.text[:300]}")
        for inv, result in zip(batch, r.json()["results"], strict=False):
            if result["status"] not in ("created", "existing"):
                raise RuntimeError(f"bulk import refused {inv.external_id}: {result}")
            inv.id = result["id"]
        ingest = self.stack.url("invoice-ingest")
        first, last = [(await self.get(f"{ingest}/v1/invoices/{inv.id}")).json() for inv in (batch[0], batch[-1])]
        if first["created_at"] == last["created_at"]:
            for inv in batch:
                inv.issued_at = ts(first["created_at"])
        else:  # not one transaction after all: ask for each
            for inv in batch:
                inv.issued_at = ts((await self.get(f"{ingest}/v1/invoices/{inv.id}")).json()["created_at"])
        self.pay_tasks += [asyncio.ensure_future(stops.race(self, inv)) for inv in batch if inv.race is not None]

    def _body(self, inv: Invoice) -> dict:
        if inv.race is not None and inv.race[2] in ("promise", "plan"):
            pauses.plan_deadline(self, inv, time.time() + self.cfg.offsets[inv.race[0]])
        return invoice_body(
            inv.external_id,
            currency="EUR",
            amount=inv.amount,
            name=f"Customer {inv.index}",
            email=inv.email,
            locale="en-GB",
            timezone=inv.timezone,
            customer_external_id=f"C-{inv.external_id}",
            due_date=inv.due_date,
            phone=channels.phone_of(inv.index),
        )

    async def issue_all(self) -> None:
        batches = max(1, round(self.cfg.spread / BATCH_EVERY))
        per = -(-len(self.invoices) // batches)
        tasks = []
        for number, start in enumerate(range(0, len(self.invoices), per)):
            await sleep_until(self.t0 + number * BATCH_EVERY)
            tasks.append(asyncio.ensure_future(self.issue_batch(self.invoices[start : start + per], number)))
        for error in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(error, Exception):  # reported as not issued; the checks cover the others
                self.notes.append(f"bulk import failed: {error!r}")
                self.log(f"WARNING: bulk import failed: {error!r}")

    # -- faults -----------------------------------------------------------------------------------
    async def chaos_monkey(self) -> None:
        lo, hi = self.cfg.kill_window
        if self.cfg.kill_every[1] <= 0:
            return
        await sleep_until(self.t0 + lo)
        while time.time() < self.t0 + hi:
            next_kill = time.time() + self.rng.uniform(*self.cfg.kill_every)
            alive = [sp for sp in self.stack.procs if sp.running()]
            sp = self.rng.choice(alive)
            fault = Fault("kill", f"{sp.name}#{sp.replica}", time.time())
            self.down.add(id(sp))
            try:
                sp.kill(signal.SIGKILL)
            except subprocess.TimeoutExpired:
                self.notes.append(f"{fault.target} still not reaped 10 s after SIGKILL")
            self.faults.append(fault)
            self.log(f"SIGKILL {fault.target}")
            await asyncio.sleep(self.rng.uniform(*self.cfg.restart_after))
            self.restart(sp, fault)
            await sleep_until(next_kill)

    def restart(self, sp: ServiceProc, fault: Fault) -> None:
        offset = sp.log_path.stat().st_size if sp.log_path.exists() else 0
        sp.start()
        self.down.discard(id(sp))
        fault.restarted_at = time.time()
        asyncio.ensure_future(self.watch_started(sp, offset, fault))

    async def watch_started(self, sp: ServiceProc, offset: int, fault: Fault) -> None:
        """fault.end = when the restarted process logged service.started (its log read incrementally)."""
        proc, marker, tail = sp.proc, b'"service.started"', b""
        assert proc is not None and fault.restarted_at is not None, "watched only after a restart"
        while sp.proc is proc and proc.poll() is None and time.time() - fault.restarted_at < 120:
            with open(sp.log_path, "rb") as f:
                f.seek(offset)
                chunk = f.read()
            offset += len(chunk)
            if marker in tail + chunk:
                fault.end = time.time()
                return
            tail = chunk[-len(marker) :]
            await asyncio.sleep(0.2)

    async def supervise(self) -> None:
        """Processes that died without our help are findings (crashes): recorded and restarted."""
        while True:
            for sp in self.stack.procs:
                proc = sp.proc
                if id(sp) not in self.down and proc is not None and proc.poll() is not None:
                    tail = sp.log_path.read_text(errors="replace")[-1500:] if sp.log_path.exists() else ""
                    outage = infra.outage_of(self, time.time())
                    kind = "crash" if outage is None else "outage_exit"
                    fault = Fault(
                        kind, f"{sp.name}#{sp.replica}", time.time(), detail=f"exit {proc.returncode}: {tail}"
                    )
                    self.faults.append(fault)
                    why = "not killed by us" if outage is None else f"{outage.target} was killed just before"
                    self.log(f"{kind.upper()} {fault.target} exited {proc.returncode} ({why}): restarting")
                    self.restart(sp, fault)
            await asyncio.sleep(0.5)

    async def admin_relay(self, action: str) -> tuple[bool, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "dunning_cli",
            "relay",
            action,
            "--service",
            "reconciliation",
            env={**os.environ, "DATABASE_URL": self.stack.database_url},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
        except TimeoutError:
            proc.kill()
            return False, f"`dunning relay {action}` did not finish within 60 s"
        return proc.returncode == 0, out.decode(errors="replace").strip()[-500:]

    async def pause_relay(self) -> None:
        """The fault window runs from the pause command's start (it takes effect before it returns)
        to the resume command's end; the pause is held `relay_pause` s from the pause's return."""
        if self.cfg.relay_pause <= 0:
            return
        await sleep_until(self.t0 + self.cfg.pause_at)
        fault = Fault("relay_pause", "reconciliation", time.time())
        ok, out = await self.admin_relay("pause")
        if not ok:
            self.relay["error"] = out
            self.log(
                "WARNING: could not pause reconciliation's relay (`dunning relay pause "
                f"--service reconciliation` failed; not available yet?): {out.splitlines()[-1] if out else ''}"
            )
            return
        paused_at = time.time()
        self.faults.append(fault)
        self.relay.update(
            paused=True, requested_at_s=round(fault.start - self.t0, 1), paused_at_s=round(paused_at - self.t0, 1)
        )
        self.log(
            f"relay of reconciliation paused for {self.cfg.relay_pause:.0f} s "
            f"(the command took {paused_at - fault.start:.1f} s)"
        )
        try:
            await asyncio.sleep(self.cfg.relay_pause / 2)
            try:  # an observation: it must not hold the relay paused longer than planned
                self.relay["observed_effective"] = await asyncio.wait_for(self.pause_effective(paused_at), 10)
            except (TimeoutError, RuntimeError) as exc:
                self.relay["observed_effective"] = f"not observed: {exc!r}"
            await sleep_until(paused_at + self.cfg.relay_pause)
        finally:
            self.relay["resume_requested_at_s"] = round(time.time() - self.t0, 1)
            ok, out = await self.admin_relay("resume")
            fault.end = time.time()
            self.relay.update(resumed=ok, resumed_at_s=round(fault.end - self.t0, 1))
            self.log("relay of reconciliation resumed" if ok else f"WARNING: relay resume failed: {out}")

    async def pause_effective(self, since: float) -> bool | None:
        """While paused, payments acknowledged in the pause must not have reached the scheduler."""
        acked = [p for p in self.payments if p.acknowledged_at and p.acknowledged_at > since + 1][:5]
        if not acked:
            return None
        sched = self.stack.url("scheduler")
        views = [(await self.get(f"{sched}/v1/invoices/{p.invoice_id}/timers")).json() for p in acked]
        return not any(v.get("settled") for v in views)

    # -- the run ----------------------------------------------------------------------------------
    async def main(self) -> dict:
        cfg = self.cfg
        self.tenant = await create_tenant(self.stack.database_url, f"Chaos {self.run_id}")
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=httpx.Timeout(30, connect=5, pool=120), limits=limits) as client:
            self.client = client
            policy = {
                "anchor": "issued_at",
                "stages": [
                    {"name": n, "offset": f"PT{o:.3f}S", "channels": list(channels.CHANNELS_OF[n])}
                    for n, o in zip(STAGES, cfg.offsets, strict=False)
                ],
                # A plan's instalment reminders are at its due date's send_time (customer's zone) plus an
                # offset: a plan's customer is where the day ends soonest, so 23:59 brings them into the run.
                "send_time": "23:59",
                "pauses": {"resume": "spaced", "promise_grace": f"PT{pauses.GRACE_S:g}S"},
                "payment_plans": {
                    "grace": f"PT{pauses.GRACE_S:g}S",
                    "reminders": [
                        {"name": "instalment_pre_due", "offset": f"-PT{cfg.gap:.0f}S"},
                        {"name": "instalment_overdue", "offset": "PT1S"},
                    ],
                    "channels": ["email"],
                },
            }
            r = await client.put(f"{self.stack.url('scheduler')}/v1/policy", json=policy, headers=self.auth)
            r.raise_for_status()
            await channels.subscribe(self)  # the firm stage's webhook goes to the receiver stand-in
            races = PolicyRaces(self, cfg.policy_customers) if cfg.policy_customers else None
            policy_report: dict[str, Any] = {"ok": True, "skipped": "--policy-customers 0"}
            if races is not None:
                try:
                    await races.setup()
                except Exception as exc:  # e.g. the settings routes missing: the run goes on, and fails
                    policy_report = {"ok": False, "error": f"policy races not set up: {exc!r}"}
                    self.log(f"WARNING: {policy_report['error']}")
                    races = None
            money = MoneyRaces(self, cfg.money_customers) if cfg.money_customers else None
            money_report: dict[str, Any] = {"ok": True, "skipped": "--money-customers 0"}
            if money is not None:
                try:
                    await money.setup()
                except Exception as exc:
                    money_report = {"ok": False, "error": f"money races not set up: {exc!r}"}
                    self.log(f"WARNING: {money_report['error']}")
                    money = None
            hands = agency.AgencyRaces(self, cfg.agency_customers) if cfg.agency_customers else None
            agency_report: dict[str, Any] = {"ok": True, "skipped": "--agency-customers 0"}
            if hands is not None:
                try:
                    await hands.setup()
                except Exception as exc:
                    agency_report = {"ok": False, "error": f"agency races not set up: {exc!r}"}
                    self.log(f"WARNING: {agency_report['error']}")
                    hands = None
            raced = sum(inv.race is not None for inv in self.invoices)
            lo, hi = cfg.kill_window
            self.t0 = time.time() + 0.5
            offsets = ", +".join(f"{o:.1f}" for o in cfg.offsets)
            self.log(
                f"{cfg.invoices} invoices over {cfg.spread:.0f} s, stages at +{offsets} s;"
                f" {raced} payments raced; kills every {cfg.kill_every[0]:g}-{cfg.kill_every[1]:g} s from"
                f" {lo:.0f} s to {hi:.0f} s; relay pause {cfg.relay_pause:g} s at {cfg.pause_at:.0f} s"
            )
            supervisor = asyncio.ensure_future(self.supervise())
            policy_work = asyncio.ensure_future(races.workload() if races else asyncio.sleep(0))
            money_work = asyncio.ensure_future(money.workload() if money else asyncio.sleep(0))
            agency_work = asyncio.ensure_future(hands.workload() if hands else asyncio.sleep(0))
            faults = [
                asyncio.ensure_future(self.chaos_monkey()),
                asyncio.ensure_future(self.pause_relay()),
                asyncio.ensure_future(infra.inject(self)),
            ]
            try:
                await self.issue_all()
                self.log(f"all {cfg.invoices} invoices issued")
                await asyncio.gather(*faults)
                last_due = max(inv.issued_at or 0 for inv in self.invoices) + cfg.offsets[-1]
                await sleep_until(last_due + 1)
                await asyncio.gather(*self.pay_tasks)
                broken = [p.ends_at for p in self.payments if p.outcome == "broken" and p.ends_at]
                if broken:  # a broken promise or plan resumes at its deadline; its owed stages keep their spacing
                    self.log("waiting for the last broken promise or plan's deadline")
                    await sleep_until(max(broken) + 1)
                self.log("every stage is due now; waiting for quiescence")
                state = await checks.quiesce(self)
                if races is not None:
                    try:
                        await policy_work
                        policy_report = await races.verdict(cfg.quiesce_timeout)
                    except Exception as exc:
                        policy_report = {"ok": False, "error": f"policy races failed: {exc!r}", "notes": races.notes}
                    self.log(f"policy races: {policy_summary(policy_report)}")
                if money is not None:
                    try:
                        await money_work
                        money_report = await money.verdict(cfg.quiesce_timeout)
                    except Exception as exc:
                        money_report = {"ok": False, "error": f"money races failed: {exc!r}", "notes": money.notes}
                    self.log(f"money races: {money_checks.summary(money_report)}")
                if hands is not None:
                    try:
                        await agency_work
                        agency_report = await hands.verdict(cfg.quiesce_timeout)
                    except Exception as exc:
                        agency_report = {"ok": False, "error": f"agency races failed: {exc!r}", "notes": hands.notes}
                    self.log(f"agency races: {agency.summary(agency_report)}")
            finally:
                supervisor.cancel()
                for task in faults:
                    task.cancel()
                if self.relay.get("paused") and not self.relay.get("resumed"):
                    await self.admin_relay("resume")
            report = checks.analyse(self, state)
            report["policies"] = policy_report
            report["money"] = money_report
            report["agency"] = agency_report
            report["ok"] = report["ok"] and policy_report["ok"] and money_report["ok"] and agency_report["ok"]
            return report


def policy_summary(p: dict) -> str:
    if "error" in p or "skipped" in p:
        return p.get("error") or p["skipped"]
    shares = ", ".join(f"{k} {v['within']}/{v['acknowledged']}" for k, v in p["share_within_50ms_by_kind"].items())
    return (
        f"{p['invoices']} invoices, races {p['races']} (within +-50 ms: {shares}"
        + aim.below_note(p)
        + f"); {p['notices_sent']} notices and {p['reminders_sent']} stages sent; violations"
        f" {p['counts']['violations']}, lost {p['counts']['lost']}, twice {p['counts']['twice']}, sent before the"
        f" window opened {len(p['sent_before_window_opened'])}"
    )


def summary(report: dict) -> str:
    f, p, v, lost, d, lat = (
        report[k] for k in ("faults", "payments", "violations", "lost", "duplicates", "lateness_s")
    )
    relay = f["relay"]
    relay_text = (
        "paused and resumed"
        if relay.get("paused") and relay.get("resumed")
        else "paused, RESUME FAILED"
        if relay.get("paused")
        else "not paused (" + (relay.get("error", "").splitlines() or ["skipped"])[-1][:120] + ")"
    )
    code = report["code"]
    lines = [
        f"code            {code['head']}, {code['uncommitted_files']} files uncommitted"
        + (
            f"; CHANGED DURING THE RUN (restarted processes ran other code): {code['changed_during_run'][:5]}"
            if code["changed_during_run"]
            else ""
        )
        + (
            f"; source files written during the run (same content at the end, maybe not in between): "
            f"{sorted(set(code['touched_during_run']) - set(code['changed_during_run']))[:5]}"
            if set(code["touched_during_run"]) - set(code["changed_during_run"])
            else ""
        ),
        f"invoices        {report['invoices']['issued']} issued, {report['invoices']['stages']} stages "
        f"({report['invoices']['unplanned']} invoices not fully planned by the scheduler, "
        f"{report['invoices']['scheduled_differs_from_issued_at_plus_offset']} stages moved by the scheduler)",
        f"faults          {f['kills']} SIGKILLs {f['kills_by_service']}, {f['restarts']} restarts, "
        f"{len(f['crashes'])} crashes not ours, {len(f['exits_during_outages'])} exits during an outage; "
        f"relay {relay_text}"
        + (f", observed effective: {relay.get('observed_effective')}" if relay.get("paused") else ""),
        "infrastructure  "
        + (
            "; ".join(
                f"{x['target']} SIGKILLed at {x['killed_at_s']} s, down {x['down_s']} s" for x in f["infrastructure"]
            )
            or "not killed"
        ),
        f"stops           {p['raced']} raced {p['by_channel']}, {p['acknowledged']} acknowledged, "
        f"{p['settled']} settled, {p['retried']} retried; {p['ack_within_50ms_of_stage']} acknowledged within "
        f"+-50 ms of their stage (ack - stage p1/p50/p99 {p['ack_minus_stage_ms']['p1']}/"
        f"{p['ack_minus_stage_ms']['p50']}/{p['ack_minus_stage_ms']['p99']} ms)",
        "within +-50 ms  "
        + ", ".join(
            f"{k} {x['within']}/{x['acknowledged']} ({100 * x['share']:.0f} %)"
            for k, x in p["share_within_50ms_by_kind"].items()
        )
        + (aim.below_note(p) or "; every kind >= 80 %"),
        f"pauses          {report['pauses']['outcomes']}; fired but dropped by the notifier for a stop: "
        f"{report['pauses']['fired_not_received_explained_by_reminder_cancelled']}",
        f"received        {report['received']['reminders']} reminders, {report['received']['distinct']} distinct "
        f"(invoice, stage, channel); by channel {report['received']['by_channel']}",
        f"VIOLATIONS      {v['count']} reminders scheduled at/after a stop's acknowledged_at, fired while it was in "
        f"force; by kind {v['by_kind']}; scheduled after ack {v['scheduled_after_ack_ms']} ms",
        f"LOST            {lost['count']}; by reason {lost['by_reason']}",
        f"DUPLICATES      {d['count']} (invoice, stage, channel) received twice or more, {d['unexplained']} "
        f"unexplained, {d['same_message_id']} Message-IDs seen twice; by channel {d['by_channel']}"
        + ("" if d["in_doubt_field_reported"] else " (the notifier does not report in_doubt_attempts yet)"),
        f"TIMELINES       {report['timelines']['checked']} checked against what the providers received, "
        f"{report['timelines']['mismatches']} differ ({report['timelines']['in_doubt_explained']} more show "
        "cancelled a delivery the SMTP server got in an attempt in doubt: the provider window)",
        f"consistency     {report['consistency']}",
        f"lateness (s)    all {lat['all']}; healthy {lat['healthy']}",
        "                by channel: " + "; ".join(f"{c} {v}" for c, v in lat.get("by_channel", {}).items()),
        f"                healthy = {lat['healthy_rule']}",
        "                p50 by scheduled time (s after start): "
        + " ".join(f"{t}:{v['p50']}" for t, v in lat["by_scheduled_10s"].items()),
        f"quiescence      {'reached' if report['quiescence']['reached'] else 'NOT REACHED'} after "
        f"{report['quiescence']['waited_s']} s; the run took {report['wall_seconds']} s, the harness "
        f"{report['harness_cpu_seconds']} s of CPU",
    ]
    pol = report.get("policies", {})
    lines.append(f"policies        {policy_summary(pol)}" if pol else "policies        not run")
    mon = report.get("money", {})
    lines.append(f"money           {money_checks.summary(mon)}" if mon else "money           not run")
    ag = report.get("agency", {})
    lines.append(f"agency          {agency.summary(ag)}" if ag else "agency          not run")
    lines += [
        f"note            {note}"
        for note in report["notes"][:10]
        + pol.get("notes", [])[:10]
        + mon.get("notes", [])[:10]
        + ag.get("notes", [])[:10]
    ]
    broken = []
    for name, items in (
        ("policy violation", pol.get("violations", [])),
        ("policy lost", pol.get("lost", [])),
        ("policy twice", pol.get("twice", [])),
        ("money violation", mon.get("violations", [])),
        ("money lost", mon.get("lost", [])),
        ("money twice", mon.get("twice", [])),
        ("agency violation", ag.get("violations", [])),
        ("agency lost", ag.get("lost", [])),
        ("agency twice", ag.get("twice", [])),
        ("violation", v["items"]),
        ("lost", lost["items"]),
        ("timeline", report["timelines"]["items"]),
        ("duplicate", [x for x in d["items"] if not x["explained"]]),
    ):
        lines += [f"  e.g. {name}: {json.dumps(item)}" for item in items[:5]]
        broken += [name] if items else []
    broken += ["sent before the window opened"] if pol.get("sent_before_window_opened") else []
    broken += ["a card payment not reversed"] if mon and not all(mon.get("reversed", {}).values()) else []
    broken += ["no hand-off"] if ag and "handed_over" in ag and not ag["handed_over"] else []
    promises = "no violation, no loss, no unexplained duplicate, timelines as received"
    if report["ok"]:
        aimed = "every kind raced >= 80 %" if cfg_judged(report) else "the aim reported, not judged (the short run)"
        result = f"OK: {promises}, {aimed}"
    elif not broken and report.get("quiescence", {}).get("reached", True):
        result = f"FAILED on the aim only (a kind under 80 % within +-50 ms, above); the promises held: {promises}"
    else:
        result = "FAILED: the promises do not hold (see above and report.json)"
    lines.append(f"RESULT          {result}")
    return "\n".join(lines)


def parse_range(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition("-")
    return float(lo), float(hi or lo)


def config_from(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(
        prog="python -m dunning_tools.chaos", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", action="store_true", help=f"the short version: {SHORT}")
    parser.add_argument("--invoices", type=int)
    parser.add_argument("--duration", type=float, help="seconds over which the stages fall due (default 240)")
    parser.add_argument("--spread", type=float, help="seconds over which invoices are issued (= duration / 2)")
    parser.add_argument(
        "--kill-every", type=parse_range, metavar="MIN-MAX", help="seconds between SIGKILLs, e.g. 3-6 (0: no kills)"
    )
    parser.add_argument("--restart-after", type=parse_range, metavar="MIN-MAX", help="seconds, e.g. 0.5-2")
    parser.add_argument("--relay-pause", type=float, help="seconds reconciliation's relay is paused (0: skip)")
    parser.add_argument("--no-relay-pause", action="store_true", help="skip the relay pause")
    parser.add_argument("--race-share", type=float, help="share of invoices paid at a stage's time (0.35)")
    parser.add_argument("--healthy-margin", type=float, help="seconds after a fault still in its window (10)")
    parser.add_argument("--quiesce-timeout", type=float)
    parser.add_argument("--notifier-lease", type=float, help="NOTIFIER_LEASE_SECONDS for the run (20)")
    parser.add_argument("--no-infra-faults", action="store_true", help="do not kill PostgreSQL and the broker")
    parser.add_argument("--infra-faults", action="store_true", help="kill PostgreSQL and the broker (--short too)")
    parser.add_argument(
        "--policy-customers", type=int, help="customers per kind of issue 10's races (notice, window, cap); 0: none"
    )
    parser.add_argument(
        "--money-customers", type=int, help="invoices of issue 11's refund and chargeback races; 0: none"
    )
    parser.add_argument("--agency-customers", type=int, help="invoices of the agency hand-off races; 0: none")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, help="default .run/chaos/<date-time>")
    parser.add_argument("--keep-data", action="store_true", help="keep the embedded PostgreSQL data directory")
    args = parser.parse_args(argv)
    values: dict[str, Any] = dict(SHORT) if args.short else {}
    for name in (
        "invoices",
        "duration",
        "kill_every",
        "restart_after",
        "relay_pause",
        "race_share",
        "healthy_margin",
        "quiesce_timeout",
        "notifier_lease",
        "policy_customers",
        "money_customers",
        "agency_customers",
        "seed",
    ):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    values["keep_data"] = args.keep_data
    if args.no_relay_pause:
        values["relay_pause"] = 0.0
    if args.no_infra_faults or args.infra_faults:
        values["infra_faults"] = bool(args.infra_faults)
    cfg = Config(**values)
    if args.spread:  # the issue spread is half the duration: set the duration from it
        cfg.duration = args.spread * 2
    cfg.workdir = args.workdir or Path(".run/chaos") / time.strftime("%Y%m%d-%H%M%S")
    return cfg


REPO = Path(__file__).resolve().parents[4]


def source_files() -> dict[str, tuple[float, str]]:
    """The code the services run (editable installs): path -> (mtime, content hash). A process
    restarted during the run runs whatever is there at that moment."""
    patterns = (
        "services/*/src/**/*.py",
        "services/*/src/**/*.sql",
        "libs/dunning/src/**/*.py",
        "libs/dunning/src/**/*.sql",
    )
    return {
        str(f.relative_to(REPO)): (f.stat().st_mtime, hashlib.sha1(f.read_bytes()).hexdigest())
        for pattern in patterns
        for f in REPO.glob(pattern)
    }


def code_version() -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "head": git("rev-parse", "--short", "HEAD") or "unknown",
        "uncommitted_files": len([line for line in git("status", "--porcelain").splitlines() if line]),
    }


def cfg_judged(report: dict) -> bool:
    """Whether the run judged its aim (the config's judge_aim, as the report records it)."""
    return bool(report["config"].get("judge_aim", True))


def main(argv: list[str] | None = None) -> int:
    cfg = config_from(argv)
    code, sources = code_version(), source_files()
    stack = Stack(
        cfg.workdir,
        Ports.free(),
        durable=False,
        durable_broker=cfg.infra_faults,  # a broker killed must come back with what it acknowledged
        crash_safe=cfg.infra_faults,
        replicas=REPLICAS,
        extra_env={"NOTIFIER_LEASE_SECONDS": str(cfg.notifier_lease)},
    )
    print(f"chaos: starting the stack in {stack.workdir} ...", flush=True)
    started = time.time()
    try:
        stack.start_infrastructure()
        stack.start_services()
        print(f"chaos: {len(stack.procs)} service processes ready in {time.time() - started:.1f} s", flush=True)
        run = Run(cfg, stack)
        report = asyncio.run(run.main())
    finally:
        stack.stop()
        if stack.pg is not None and not cfg.keep_data:
            shutil.rmtree(stack.workdir / "pgdata", ignore_errors=True)
    report["wall_seconds"] = round(time.time() - started, 1)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report["harness_cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 1)
    now = source_files()
    report["code"] = {
        **code,
        "changed_during_run": sorted(f for f, (_, h) in now.items() if sources.get(f, (0, ""))[1] != h),
        "touched_during_run": sorted(f for f, (m, _) in now.items() if sources.get(f, (0, ""))[0] != m),
    }
    (stack.workdir / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (stack.workdir / "payments.json").write_text(json.dumps([asdict(p) for p in run.payments], indent=1))
    print(summary(report), flush=True)
    print(f"report: {stack.workdir / 'report.json'}", flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
