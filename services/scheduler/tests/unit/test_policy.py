import jsonschema_rs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dunning_scheduler.policy import DEFAULT_DOCUMENT, DEFAULT_POLICY, PolicyDocument, PolicyError, parse_policy

pytestmark = pytest.mark.unit


def stages(*offsets):
    return [{"name": f"s{i}", "offset": o} for i, o in enumerate(offsets)]


@pytest.mark.parametrize(
    "document, field, fragment",
    [
        pytest.param([], "(body)", "JSON object", id="not-an-object"),
        pytest.param({"stages": [], "colour": "red"}, "colour", "unknown key", id="unknown-policy-key"),
        pytest.param({}, "stages", "required", id="no-stages"),
        pytest.param(
            {"stages": [{"name": "soft", "offset": "P1D", "tone": "x"}]},
            "stages.0.tone",
            "unknown key",
            id="unknown-stage-key",
        ),
        pytest.param(
            {"stages": [{"name": "soft", "offset": "1 day"}]}, "stages.0.offset", "ISO 8601", id="bad-duration"
        ),
        pytest.param({"stages": [{"name": "soft"}]}, "stages.0.offset", "required", id="missing-offset"),
        pytest.param({"stages": [{"name": "Soft!", "offset": "P1D"}]}, "stages.0.name", "lower-case", id="bad-name"),
        pytest.param(
            {"stages": [{"name": "soft", "offset": "P1D"}, {"name": "soft", "offset": "P2D"}]},
            "stages.1.name",
            "duplicate",
            id="duplicate-name",
        ),
        pytest.param({"stages": stages("P7D", "P1D")}, "stages.1.offset", "increasing", id="decreasing"),
        pytest.param({"stages": stages("P1D", "PT24H")}, "stages.1.offset", "increasing", id="equal-offsets"),
        pytest.param({"stages": stages(*[f"P{i}D" for i in range(21)])}, "stages", "at most 20", id="too-many"),
        pytest.param(
            {"stages": [{"name": "soft", "offset": "P1D", "channels": ["fax"]}]},
            "stages.0.channels.0",
            "unknown channel",
            id="bad-channel",
        ),
        pytest.param(
            {"stages": [{"name": "soft", "offset": "P1D", "channels": []}]},
            "stages.0.channels",
            "non-empty",
            id="no-channels",
        ),
        pytest.param(
            {"stages": [{"name": "soft", "offset": "P1D", "template": "Loud"}]},
            "stages.0.template",
            "lower-case",
            id="bad-template",
        ),
        pytest.param({"anchor": "sent_at", "stages": []}, "anchor", "due_date", id="bad-anchor"),
        pytest.param({"send_time": "9am", "stages": []}, "send_time", "HH:MM", id="bad-send-time"),
        pytest.param({"send_time": "24:00", "stages": []}, "send_time", "HH:MM", id="send-time-out-of-range"),
        pytest.param({"stages": stages("P20Y")}, "stages.0.offset", "10 years", id="offset-too-far"),
        pytest.param(
            {
                "stages": [
                    {"name": f"s{i}", "offset": f"P{i}D", "channels": ["email", "sms", "letter"]} for i in range(17)
                ]
            },
            "stages",
            "(stage, channel)",
            id="too-many-timers",
        ),
    ],
)
def test_invalid_documents_name_the_field(document, field, fragment):
    with pytest.raises(PolicyError) as caught:
        parse_policy(document)
    matching = [e for e in caught.value.errors if e["field"] == field]
    assert matching, caught.value.errors
    assert fragment in matching[0]["message"]


def test_every_problem_is_reported_at_once():
    with pytest.raises(PolicyError) as caught:
        parse_policy(
            {"anchor": "x", "stages": [{"name": "a", "offset": "bad"}, {"name": "b", "offset": "P1D", "x": 1}]}
        )
    assert {e["field"] for e in caught.value.errors} == {"anchor", "stages.0.offset", "stages.1.x"}


def test_defaults_are_written_out():
    policy = parse_policy({"stages": [{"name": "soft", "offset": "P1D"}]})
    assert policy.document == {
        "id": "pol_custom",
        "anchor": "due_date",
        "send_time": "09:00",
        "stages": [{"name": "soft", "offset": "P1D", "template": "soft", "channels": ["email"]}],
        "pauses": {"resume": "spaced", "promise_grace": "P2D"},
        "payment_plans": {
            "grace": "P3D",
            "reminders": [
                {"name": "instalment_pre_due", "offset": "-P3D"},
                {"name": "instalment_overdue", "offset": "P1D"},
            ],
            "channels": ["email"],
        },
    }
    assert parse_policy(policy.document).document == policy.document


@pytest.mark.parametrize(
    "pauses_and_plans, field, fragment",
    [
        pytest.param({"pauses": {"resume": "burst"}}, "pauses.resume", "spaced, latest_only", id="bad-resume"),
        pytest.param({"pauses": {"promise_grace": "two days"}}, "pauses.promise_grace", "ISO 8601", id="bad-grace"),
        pytest.param({"pauses": {"promise_grace": "-P1D"}}, "pauses.promise_grace", "negative", id="negative-grace"),
        pytest.param({"pauses": {"when": "now"}}, "pauses.when", "unknown key", id="unknown-pauses-key"),
        pytest.param({"pauses": []}, "pauses", "object", id="pauses-not-object"),
        pytest.param({"payment_plans": {"grace": "P"}}, "payment_plans.grace", "no components", id="empty-grace"),
        pytest.param(
            {"payment_plans": {"reminders": [{"name": "pre", "offset": "P1D", "tone": "x"}]}},
            "payment_plans.reminders.0.tone",
            "unknown key",
            id="unknown-reminder-key",
        ),
        pytest.param(
            {"payment_plans": {"reminders": [{"name": "pre", "offset": "soon"}]}},
            "payment_plans.reminders.0.offset",
            "ISO 8601",
            id="bad-reminder-offset",
        ),
        pytest.param(
            {"payment_plans": {"reminders": [{"name": "a", "offset": "P1D"}, {"name": "a", "offset": "P2D"}]}},
            "payment_plans.reminders",
            "twice",
            id="duplicate-reminder",
        ),
        pytest.param({"payment_plans": {"channels": ["fax"]}}, "payment_plans.channels.0", "fax", id="bad-channel"),
    ],
)
def test_pauses_and_payment_plans_are_checked_naming_the_field(pauses_and_plans, field, fragment):
    with pytest.raises(PolicyError) as caught:
        parse_policy({"stages": [], **pauses_and_plans})
    matching = [e for e in caught.value.errors if e["field"] == field]
    assert matching, caught.value.errors
    assert fragment in matching[0]["message"]


def test_pauses_and_plans_compile_with_seconds_for_demos():
    policy = parse_policy(
        {
            "stages": [],
            "pauses": {"resume": "latest_only", "promise_grace": "PT10S"},
            "payment_plans": {"grace": "PT5S", "reminders": [{"name": "instalment_due", "offset": "PT0S"}]},
        }
    )
    assert policy.resume_mode == "latest_only"
    assert policy.promise_grace.time_delta().total_seconds() == 10
    assert [r.name for r in policy.plan_reminders] == ["instalment_due"]
    assert policy.plan_channels == ("email",)


def test_the_default_policy():
    assert [(s.name, s.offset_text) for s in DEFAULT_POLICY.stages] == [
        ("pre_due", "-P3D"),
        ("soft", "P1D"),
        ("firm", "P7D"),
        ("final", "P14D"),
        ("collections", "P30D"),
    ]
    assert DEFAULT_POLICY.policy_id == "pol_default" and DEFAULT_POLICY.is_default
    assert parse_policy(DEFAULT_DOCUMENT).document["stages"] == DEFAULT_POLICY.document["stages"]


def test_an_empty_plan_is_allowed():
    assert parse_policy({"id": "pol_manual_only", "stages": []}).stages == ()


# --- the model documents what it validates ----------------------------------------------------------

SCHEMA = jsonschema_rs.Draft202012Validator(PolicyDocument.model_json_schema())
offsets = st.one_of(
    st.sampled_from(["-P3D", "P1D", "PT5S", "P1M", "P1WT12H", "P20Y", "1 day", "", "P", "-PT0.5S"]),
    st.integers(-400, 400).map(lambda d: f"-P{-d}D" if d < 0 else f"P{d}D"),
)
stage_docs = st.fixed_dictionaries(
    {"name": st.one_of(st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True), st.sampled_from(["Soft!", "", 7]))},
    optional={
        "offset": offsets,
        "template": st.sampled_from(["soft", "Loud", "a.b-c", None]),
        "channels": st.lists(st.sampled_from(["email", "sms", "webhook", "letter", "fax"]), max_size=5),
        "tone": st.just("x"),
    },
)
policy_docs = st.fixed_dictionaries(
    {},
    optional={
        "id": st.sampled_from(["pol_a", "pol:b.c", "", "bad id"]),
        "description": st.text(max_size=20),
        "anchor": st.sampled_from(["due_date", "issued_at", "sent_at"]),
        "send_time": st.sampled_from(["09:00", "23:59", "24:00", "9am"]),
        "stages": st.lists(stage_docs, max_size=6),
        "colour": st.just("red"),
    },
)


@settings(max_examples=300, deadline=None)
@given(policy_docs)
def test_every_document_the_model_accepts_fits_the_schema_the_api_shows(document):
    try:
        parse_policy(document)
    except PolicyError as exc:
        assert all(e["field"] and e["message"] for e in exc.errors)  # every refusal names a field
        return
    assert SCHEMA.is_valid(document), document


# --- calendar, threshold and charge keys ------------------------------------------------------------


def test_a_document_without_the_new_keys_normalises_as_before():
    policy = parse_policy({"stages": stages("P1D")})
    assert set(policy.document) == {"id", "anchor", "send_time", "stages", "pauses", "payment_plans"}
    assert set(policy.document["stages"][0]) == {"name", "offset", "template", "channels"}
    assert (policy.days, policy.non_working_day, policy.below_minimum) == ("calendar", "next", "skip")
    assert not policy.has_grace and policy.minimum_balance == {} and policy.interest is None
    explicit = parse_policy({"stages": stages("P1D"), "days": "calendar", "grace": "P0D", "below_minimum": "skip"})
    assert explicit.document == policy.document  # a PUT of the defaults stores nothing new


def test_the_new_keys_compile_and_round_trip():
    from decimal import Decimal

    document = {
        "days": "business",
        "non_working_day": "previous",
        "grace": "P3D",
        "minimum_balance": {"GBP": "5", "EUR": "10.00"},
        "below_minimum": "pre_due_only",
        "interest": {"reference": "ecb_main_refinancing", "margin": "8.00", "fixing": "daily", "day_count": "ACT/360"},
        "stages": [
            {"name": "soft", "offset": "P1D"},
            {"name": "firm", "offset": "P7D", "late_fee": {"EUR": "40.00"}, "charge_interest": True},
        ],
    }
    policy = parse_policy(document)
    assert policy.days == "business" and policy.non_working_day == "previous" and policy.grace.days == 3
    assert policy.minimum_balance == {"EUR": Decimal("10.00"), "GBP": Decimal("5")}
    assert policy.interest is not None and policy.interest.reference == "ecb_main_refinancing"
    assert policy.interest.margin == Decimal("8.00") and policy.interest.annual_rate is None
    assert policy.stages[1].late_fee == {"EUR": Decimal("40.00")} and policy.stages[1].charge_interest
    assert policy.stages[0].late_fee == {} and not policy.stages[0].charge_interest
    assert policy.document["minimum_balance"] == {"EUR": "10.00", "GBP": "5"}
    assert parse_policy(policy.document).document == policy.document
    fixed = parse_policy({"stages": [], "interest": {"annual_rate": "10.15"}})
    assert fixed.document["interest"] == {"annual_rate": "10.15", "day_count": "ACT/365F"}


@pytest.mark.parametrize(
    "document, field, fragment",
    [
        pytest.param(
            {"stages": [], "interest": {"day_count": "30/360", "annual_rate": "8"}},
            "interest.day_count",
            "ACT/365F",
            id="day-count",
        ),
        pytest.param({"stages": [], "interest": {}}, "interest.annual_rate", "either", id="no-rate"),
        pytest.param(
            {"stages": [], "interest": {"annual_rate": "8", "reference": "ecb"}},
            "interest.annual_rate",
            "either",
            id="two-rates",
        ),
        pytest.param(
            {"stages": [], "interest": {"annual_rate": "100.5"}}, "interest.annual_rate", "0 to 100", id="rate-too-high"
        ),
        pytest.param(
            {"stages": [], "interest": {"annual_rate": "-1"}}, "interest.annual_rate", "percentage", id="negative-rate"
        ),
        pytest.param(
            {"stages": [], "minimum_balance": {"eur": "10"}},
            "minimum_balance.eur",
            "three upper-case",
            id="currency-case",
        ),
        pytest.param(
            {"stages": [], "minimum_balance": {"EUR": "1e3"}},
            "minimum_balance.EUR",
            "decimal string",
            id="amount-shape",
        ),
        pytest.param(
            {"stages": [{"name": "a", "offset": "P1D"}, {"name": "b", "offset": "P2D", "late_fee": {"EUR": 40}}]},
            "stages.1.late_fee.EUR",
            "decimal string",
            id="fee-number",
        ),
        pytest.param(
            {"stages": stages("P1D", "P1DT2H"), "days": "business"},
            "stages.1.offset",
            "business days need whole-day offsets",
            id="business-hours",
        ),
        pytest.param(
            {"stages": stages("P1M"), "days": "business"}, "stages.0.offset", "whole-day", id="business-month"
        ),
        pytest.param({"stages": [], "grace": "-P1D"}, "grace", "negative", id="negative-grace"),
        pytest.param({"stages": [], "grace": "PT5H"}, "grace", "whole days", id="grace-hours"),
        pytest.param({"stages": [], "days": "working"}, "days", "calendar, business", id="days"),
        pytest.param({"stages": [], "non_working_day": "skip"}, "non_working_day", "next", id="roll"),
        pytest.param({"stages": [], "below_minimum": "never"}, "below_minimum", "pre_due_only", id="below"),
        pytest.param(
            {"stages": [], "interest": {"annual_rate": "8", "x": 1}}, "interest.x", "unknown key", id="interest-key"
        ),
    ],
)
def test_the_new_keys_are_checked_naming_the_field(document, field, fragment):
    with pytest.raises(PolicyError) as caught:
        parse_policy(document)
    assert any(e["field"] == field and fragment in e["message"] for e in caught.value.errors), caught.value.errors


def test_chased_is_the_one_threshold_rule():
    from decimal import Decimal

    policy = parse_policy({"stages": stages("-P3D", "P0D", "P1D"), "minimum_balance": {"EUR": "10.00"}})
    pre_due, on_due, overdue = policy.stages
    assert policy.chased(overdue, Decimal("10.00"), "EUR") and policy.chased(overdue, Decimal("1"), "USD")
    assert not policy.chased(pre_due, Decimal("9.99"), "EUR")
    lenient = parse_policy({**policy.document, "below_minimum": "pre_due_only"})
    assert lenient.chased(lenient.stages[0], Decimal("1"), "EUR") and lenient.chased(
        lenient.stages[1], Decimal("1"), "EUR"
    )
    assert not lenient.chased(lenient.stages[2], Decimal("1"), "EUR")
