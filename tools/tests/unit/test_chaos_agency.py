"""The agency races' verdict: a case handed over whose delivery's outcome was lost with a killed
notifier (cancelled by the hand-off's own stop before its retry) is the provider window, not a loss."""

from types import SimpleNamespace

import pytest

from dunning_tools.chaos import agency
from dunning_tools.chaos.aim import Aim

pytestmark = pytest.mark.unit
INVOICE = "inv_01M8R34VTYZGXAKQ0SHK3WZSB7"


def verdict(delivery: dict, acknowledged_at: float | None) -> dict:
    hand = agency.Hand(0, invoice_id=INVOICE, stage="collections", stage_at=100.0, acknowledged_at=acknowledged_at)
    races = SimpleNamespace(hands=[hand], run=SimpleNamespace(aim=Aim()), notes=[])
    timer = {"stage": "collections", "channel": "agency", "state": "fired", "scheduled_at": "2026-12-01T06:02:51Z"}
    views = {INVOICE: [timer]}
    deliveries = {(INVOICE, "collections", "agency"): delivery}
    mails = {(INVOICE, agency.NOTICE, "email"): 1}
    return agency.judge(races, views, deliveries, mails)


def test_a_handed_over_case_whose_delivery_went_in_doubt_then_cancelled_is_not_lost():
    report = verdict({"state": "cancelled", "in_doubt_attempts": 1}, acknowledged_at=100.01)
    assert report["counts"]["lost"] == 0


@pytest.mark.parametrize(
    ("delivery", "acknowledged_at"),
    [
        ({"state": "cancelled", "in_doubt_attempts": 0}, 100.01),  # cancelled, never sent: lost
        ({"state": "cancelled", "in_doubt_attempts": 1}, None),  # never handed over: lost
        ({"state": "failed", "in_doubt_attempts": 1}, 100.01),
    ],
)
def test_a_case_delivery_not_sent_otherwise_is_lost(delivery, acknowledged_at):
    assert verdict(delivery, acknowledged_at)["counts"]["lost"] >= 1
