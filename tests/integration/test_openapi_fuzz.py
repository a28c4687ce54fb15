"""Property-based fuzzing of each service's OpenAPI with schemathesis, over real HTTP (uvicorn).

For every operation, a few dozen requests that fit the schema and a few dozen that do not, with a
valid API key: no answer is a server error, and every answer matches the schema the OpenAPI gives
for its status and content type (problem documents included). A modest example count keeps the
whole run well under a minute; `FUZZ_EXAMPLES` raises it for a longer hunt.
"""

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

pytestmark = pytest.mark.integration
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


def _fuzz(operation, mode: GenerationMode, base_url: str, headers: dict[str, str]) -> None:
    @settings(
        max_examples=EXAMPLES, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=30)

    run()


@pytest.mark.parametrize("service", ["invoice-ingest", "scheduler", "notifier", "reconciliation"])
def test_every_operation_answers_as_its_openapi_says(live_services, services_kit, service):
    url = live_services.urls[service]
    schema = schemathesis.openapi.from_dict(live_services.apps[service].openapi())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, "nothing to fuzz"
    headers = {"Authorization": f"Bearer {services_kit.API_KEY}"}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, mode, url, headers)
