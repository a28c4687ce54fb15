"""Chaos, short version: the whole stack (2 replicas of every service) while service processes are
SIGKILLed every few seconds and reconciliation's outbox relay is paused, with every kind of stop
raced against stage times (payments through Stripe webhooks and POST /v1/payments, settling credit
notes, voids, write-offs, holds on invoices and customers, disputes, promises, payment plans, and
due-date changes), each aimed to be acknowledged within +-50 ms of a stage; holds are released or
expire, disputes rejected or upheld, promises kept or broken (most made `by` an instant, which breaks
within the run; the others by a day, broken only when it ends within the run), plans kept (or broken,
when a day ends within the run); then the promises are checked from what the providers received (the
SMTP server; the Twilio stand-in for the soft stage, by SMS; the webhook receiver for the firm stage,
`reminder.due`) and the public APIs (see dunning_tools.chaos); beside them issue 10's policy races,
issue 11's refunds and chargebacks that reopen a paid invoice (chaos.money) and the agency hand-off
raced against a stage (chaos.agency). The broker and PostgreSQL are killed in the full run
(`make chaos`) only.

Runs `python -m dunning_tools.chaos --short` as a subprocess (its own embedded PostgreSQL and
broker, unless DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS are set) and reads its report.json. About
1.5 minutes; no timing is asserted.
"""

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.alone]


@pytest.fixture(scope="module")
def chaos(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("chaos")
    proc = subprocess.run(
        [sys.executable, "-m", "dunning_tools.chaos", "--short", "--seed", "7", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=230,
    )
    output = f"{proc.stdout[-8000:]}\n{proc.stderr[-4000:]}"
    assert (workdir / "report.json").exists(), output
    return json.loads((workdir / "report.json").read_text()), proc.returncode, output


def test_faults_really_happened(chaos):
    report, _, output = chaos
    assert report["invoices"]["issued"] == 600 and report["invoices"]["not_issued"] == 0, output
    assert report["faults"]["kills"] > 0, output
    assert report["faults"]["restarts"] >= report["faults"]["kills"], output
    assert report["payments"]["raced"] > 0 and report["payments"]["ack_within_50ms_of_stage"] > 0, output
    assert all(n > 0 for n in report["payments"]["by_channel"].values()), report["payments"]["by_channel"]
    outcomes = report["pauses"]["outcomes"]
    resumed = ("hold_invoice/released", "hold_customer/released", "dispute/rejected", "promise/broken/by")
    for done in resumed:  # resumed: owed stages (a promise by an instant breaks within every run)
        assert outcomes.get(done, 0) > 0, outcomes
    assert report["payments"]["settled"] > 0, output
    assert report["faults"]["relay"]["paused"] and report["faults"]["relay"].get("resumed"), output
    assert report["quiescence"]["reached"], output


def test_every_kind_of_stop_really_raced(chaos):
    """Every kind of stop was acknowledged within +-50 ms of a stage's time at least once. The share
    that did is a figure, printed and judged by `make chaos` (>= 80 % per kind), not asserted here:
    tests never assert timings, and in this short run most stops fall in a restart's window."""
    report, _, output = chaos
    share = report["payments"]["share_within_50ms_by_kind"]
    assert set(share) == set(report["payments"]["by_channel"]), share
    assert all(kind["within"] > 0 for kind in share.values()), share


def test_no_reminder_while_a_stop_is_in_force(chaos):
    report, _, output = chaos
    assert report["violations"]["count"] == 0, output


def test_every_timeline_matches_what_the_smtp_server_received(chaos):
    report, _, output = chaos
    assert report["timelines"]["checked"] > 0 and report["timelines"]["mismatches"] == 0, output


def test_no_reminder_lost(chaos):
    report, _, output = chaos
    assert report["lost"]["count"] == 0, output


def test_no_reminder_twice_outside_the_provider_window(chaos):
    report, returncode, output = chaos
    assert report["duplicates"]["unexplained"] == 0, output
    assert all(d["unexplained"] == 0 for d in report["duplicates"]["by_channel"].values()), output
    assert returncode == 0, output


def test_sms_and_webhook_reminders_were_judged_like_mail(chaos):
    """The soft stage goes by SMS and the firm stage by webhook: what the Twilio stand-in and the
    webhook receiver got is in every check (none lost, none twice, timelines), per channel."""
    report, _, output = chaos
    distinct = report["received"]["distinct_by_channel"]
    assert all(distinct.get(channel, 0) > 0 for channel in ("email", "sms", "webhook")), distinct
    assert set(report["duplicates"]["by_channel"]) >= {"email", "sms", "webhook"}, output


def test_the_policy_races_ran_and_held(chaos):
    """Issue 10's firing rules under the same faults: payments raced against a consolidated notice's
    time and against stages a send window and a quiet period deferred."""
    report, _, output = chaos
    policies = report["policies"]
    assert "error" not in policies and "skipped" not in policies, output
    assert all(policies["races"][kind] > 0 for kind in ("notice", "window", "cap")), policies["races"]
    assert policies["notices_sent"] > 0, output
    assert policies["counts"] == {"violations": 0, "lost": 0, "twice": 0}, output
    assert policies["sent_before_window_opened"] == [], output
    assert policies["ok"], output


def test_the_money_races_ran_and_held(chaos):
    """Issue 11 under the same faults: card payments raced against a stage, then refunded or charged
    back (lost) at the next stage's time; the reopened invoices' owed stages all sent, none sent while
    the invoice was settled, none twice."""
    report, _, output = chaos
    money = report["money"]
    assert "error" not in money and "skipped" not in money, output
    assert all(money["races"][kind] > 0 for kind in ("refund", "chargeback")), money["races"]
    assert all(money["reversed"][kind] > 0 for kind in ("refund", "chargeback")), money["reversed"]
    assert money["reopened"] > 0, output
    assert money["counts"] == {"violations": 0, "lost": 0, "twice": 0}, output
    assert money["ok"], output


def test_the_agency_hand_off_raced_and_held(chaos):
    """The agency's acknowledgement (the hand-off, the `with_agency` stop) aimed at a stage: nothing
    sent after the stop but the `handed_over` notice, which every handed-over invoice gets once."""
    report, _, output = chaos
    agency = report["agency"]
    assert "error" not in agency and "skipped" not in agency, output
    assert agency["handed_over"] > 0, agency
    assert agency["counts"] == {"violations": 0, "lost": 0, "twice": 0}, output
    assert agency["ok"], output
