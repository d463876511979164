"""Schemathesis against the API's own OpenAPI document: no generated request gets a 5xx.

Every operation gets `THREADBUS_FUZZ_EXAMPLES` generated requests (50 by default, so the run
fits the suite; set it higher for a longer hunt). The failures of all operations are reported
together, each with the request that caused it.
"""

import os
import time
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.system import HEADERS, System

EXAMPLES = int(os.environ.get("THREADBUS_FUZZ_EXAMPLES", "50"))


@pytest.fixture(scope="module")
def api_schema(system: System) -> Any:
    """The OpenAPI document the API serves, pointed at the running API."""
    root = system.api_url.removesuffix("/v1")
    document = httpx.get(f"{root}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    schema.config.update(base_url=root)
    return schema


# Schemathesis' own strategies touch the `random` module now and then; Hypothesis warns about
# that, and the suite's warnings-are-errors would turn it into a flaky failure not ours.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
def test_no_generated_request_gets_a_server_error(api_schema: Any) -> None:
    errors: dict[str, str] = {}
    calls = 0
    started = time.monotonic()
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 30, "the document lost operations"
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def call(case: Any) -> None:
            nonlocal calls
            case.headers = {**(case.headers or {}), **HEADERS}
            response = case.call(timeout=30)
            calls += 1
            label = case.operation.label
            if response.status_code >= 500 and label not in errors:
                errors[label] = (
                    f"{response.status_code} for {case.as_curl_command()}: {response.text[:300]}"
                )

        call()
    print(f"\nfuzzed {len(operations)} operations with {calls} requests "
          f"in {time.monotonic() - started:.0f} s")  # fmt: skip
    assert not errors, "\n".join(f"{label}: {error}" for label, error in errors.items())
