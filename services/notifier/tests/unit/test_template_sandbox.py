"""A template that would spend without bound is refused (in a bounded child), never run in-process."""

import pytest

from dunning_notifier.rendering import Renderer
from dunning_notifier.template_samples import sample_contexts
from dunning_notifier.template_sandbox import TemplateTooCostly, run_bounded
from dunning_notifier.tenant_templates import TemplateInvalid, validate

pytestmark = pytest.mark.unit
DOUBLING = "{% set s = customer.name %}" + "{% set s = s ~ s %}" * 40 + "{{ s|length }}"


def check(renderer: Renderer, text: str) -> None:
    validate(renderer.env, "sms", {"text": text}, sample_contexts(renderer, "firm", "sms", "en-US"))


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # the memory bound, or on a machine too loaded to reach it within the time bound, that one
        pytest.param(DOUBLING, ("parts: needs more than", "parts: took more than"), id="exponential-memory"),
        pytest.param(
            "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
            ("parts: took more than",),
            id="nested-loops",
        ),
    ],
)
async def test_a_template_that_spends_without_bound_is_refused(renderer, text, message):
    with pytest.raises(TemplateTooCostly) as caught:
        await run_bounded("parts", check, renderer, text)
    [error] = caught.value.errors
    assert error["code"] == "too_costly" and error["message"].startswith(message)


async def test_a_cheap_template_passes_and_an_invalid_one_is_refused_as_in_process(renderer):
    assert await run_bounded("parts", check, renderer, "{{ invoice.number }}") is None
    with pytest.raises(TemplateInvalid) as caught:
        await run_bounded("parts", check, renderer, "x\n{{ nope }}")
    assert caught.value.errors[0]["message"].startswith("text: line 2: unknown variable 'nope'")
