"""A tenant's template is refused at save when it would fail (or escape) at send time, with the part
and line named; what it may name is exactly what the renderer provides."""

import pytest

from dunning_notifier.rendering import Renderer
from dunning_notifier.template_samples import sample_contexts
from dunning_notifier.tenant_templates import TemplateInvalid, shipped_source, validate

pytestmark = pytest.mark.unit
GOOD = {
    "subject": "Invoice {{ invoice.number }} is {{ days_overdue|days }} overdue",
    "text": "Dear {{ customer.name }},\n{{ _('Pay') }} {{ invoice.balance }}{% include 'email/_details.txt.j2' %}",
    "html": "{% extends 'email/_layout.html.j2' %}{% block body %}<p>{{ customer.name }}</p>{% endblock %}",
}


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def refusal(renderer: Renderer, parts: dict, key: str = "firm", channel: str = "email") -> list[dict]:
    with pytest.raises(TemplateInvalid) as caught:
        validate(renderer.env, channel, parts, sample_contexts(renderer, key, channel, "en-US"))
    return caught.value.errors


def test_a_template_using_known_variables_and_shipped_partials_is_accepted(renderer):
    compiled = validate(renderer.env, "email", GOOD, sample_contexts(renderer, "firm", "email", "de-AT"))
    assert set(compiled) == {"subject", "text", "html"}


@pytest.mark.parametrize(
    ("part", "source", "field", "message"),
    [
        pytest.param(
            "html", "<p>\n\n{{ invoice.number }</p>", "parts.html", "html: line 3: unexpected '}'", id="syntax"
        ),
        pytest.param("text", "Hi\n{% if x %}", "parts.text", "text: line 2: ", id="unclosed-block"),
        pytest.param(
            "text",
            "Hi\n{{ customr.name }}",
            "parts.text",
            "text: line 2: unknown variable 'customr'",
            id="unknown-variable",
        ),
        pytest.param(
            "text",
            "Hi\n\n\n{{ invoice.nmber }}",
            "parts.text",
            "text: line 4: 'dict object' has no attribute 'nmber'",
            id="unknown-attribute",
        ),
        pytest.param(
            "subject",
            "{{ ''.__class__ }}",
            "parts.subject",
            "subject: line 1: access to '__class__' is not allowed",
            id="dunder",
        ),
        pytest.param(
            "text",
            "{{ invoice['__class__'] }}",
            "parts.text",
            "text: line 1: access to '__class__' is not allowed",
            id="dunder-item",
        ),
        pytest.param(
            "text", "x\n{{ stage.mro }}", "parts.text", "text: line 2: access to 'mro' is not allowed", id="mro"
        ),
        pytest.param(
            "text",
            "{{ charges.total_due }}",
            "parts.text",
            "text: line 1: 'None' has no attribute 'total_due'",
            id="unguarded-optional",
        ),
        pytest.param(
            "text",
            "{% include 'email/firm.txt.j2' %}",
            "parts.text",
            "text: line 1: only a shipped partial",
            id="include-whole",
        ),
        pytest.param(
            "text",
            "{% include customer.name %}",
            "parts.text",
            "text: line 1: only a shipped partial",
            id="include-dynamic",
        ),
        pytest.param("subject", "x" * 1001, "parts.subject", "subject: 1001 characters; at most 1000", id="too-long"),
    ],
)
def test_a_bad_part_is_refused_naming_the_part_and_line(renderer, part, source, field, message):
    errors = refusal(renderer, {**GOOD, part: source})
    assert [e["field"] for e in errors][:1] == [field]
    assert errors[0]["message"].startswith(message), errors[0]["message"]


def test_the_unknown_variable_message_lists_the_known_ones(renderer):
    [error] = refusal(renderer, {**GOOD, "text": "{{ amount }}"})
    assert error["code"] == "unknown_variable"
    assert "known: agency, brand, charges, customer" in error["message"]


def test_every_bad_part_is_named_at_once(renderer):
    errors = refusal(renderer, {"subject": "{{ x }}", "text": "{{ y }}", "html": "{% if %}"})
    assert [e["field"] for e in errors] == ["parts.subject", "parts.text", "parts.html"]


@pytest.mark.parametrize(
    ("channel", "parts", "message"),
    [
        pytest.param("sms", {"text": "ok", "html": "<p>"}, "html: not a part of a sms template (text)", id="sms-html"),
        pytest.param("letter", {"subject": "s"}, "text: missing", id="letter-text-missing"),
        pytest.param("sms", {"text": "x" * 2001}, "text: 2001 characters; at most 2000", id="sms-size"),
    ],
)
def test_the_parts_are_exactly_the_channels(renderer, channel, parts, message):
    assert refusal(renderer, parts, channel=channel)[0]["message"] == message


@pytest.mark.parametrize(
    ("key", "source"),
    [
        pytest.param("promise_broken", "{{ promise.amount }} by {{ promise.date }}", id="promise-stage-quotes-promise"),
        pytest.param("instalment_overdue", "{{ instalment.number }}/{{ instalment.of }}", id="instalment"),
        pytest.param("handed_over", "{{ agency.name }}", id="agency"),
        pytest.param(
            "firm", "{% if promise %}{{ promise.amount }}{% endif %}{{ brand.bank.iban if brand.bank }}", id="guarded"
        ),
    ],
)
def test_what_a_stage_always_carries_may_be_used_unguarded(renderer, key, source):
    validate(renderer.env, "sms", {"text": source}, sample_contexts(renderer, key, "sms", "en-US"))


def test_a_promise_quoted_by_a_stage_that_has_none_is_refused(renderer):
    [error] = refusal(renderer, {"text": "{{ promise.amount }}"}, key="firm", channel="sms")
    assert error["message"].startswith("text: line 1: 'None' has no attribute 'amount'")


def test_the_shipped_default_follows_the_renderers_fallback(renderer):
    name, parts = shipped_source(renderer.env, "no_such_stage", "email", "de-AT")
    assert name == "email/generic" and set(parts) == {"subject", "text", "html"}
    name, _ = shipped_source(renderer.env, "firm", "email", "de-AT")
    assert name == "email/firm"
