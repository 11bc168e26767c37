"""Fuzz the ingress from its own OpenAPI schema (schemathesis): no input, valid or not, gets a 5xx.

The app runs in process (ASGI) in front of a real redis-server, with a queue prefix no worker
consumes. Requests carry a valid API key, so the fuzzer reaches validation and Redis, not just auth.
"""

from __future__ import annotations

import secrets
import uuid
from collections import Counter
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from sift_it_helpers import redis_url_of

from producers.ingress import IngressSettings, create_app
from sift.settings import SiftSettings

pytestmark = pytest.mark.integration

KEY = "fuzz-" + secrets.token_hex(16)
EXAMPLES = 100
"""Examples per operation and generation mode."""
# Both ways, so that the security headers the fuzzer generates itself are replaced by valid ones.
AUTH = {"Authorization": f"Bearer {KEY}", "X-API-Key": KEY}
STATUSES: Counter[int] = Counter()
"""Statuses the fuzzer got, to show it went past authentication and validation."""


@pytest.fixture(scope="module")
def ingress_app(redis_server: Any) -> FastAPI:
    sift_settings = SiftSettings(redis_url=redis_url_of(redis_server), queue_prefix=f"fuzz-{uuid.uuid4().hex[:8]}")
    return create_app(sift_settings, IngressSettings(api_keys=KEY, max_items_per_request=50))


@pytest.fixture(scope="module")
def ingress_schema(ingress_app: FastAPI) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", ingress_app)


# schemathesis' own pytest loader (from_fixture) breaks on pytest 9, so each operation's hypothesis
# strategy is driven here: the same generators, examples bounded to keep the run near 30 s on 2 cores.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda mode: mode.value)
def test_no_request_gets_a_server_error(ingress_schema: Any, mode: GenerationMode) -> None:
    operations = [result.ok() for result in ingress_schema.get_all_operations()]
    assert len(operations) >= 6
    if mode is GenerationMode.NEGATIVE:  # an operation without inputs has no invalid request to make
        operations = [op for op in operations if list(op.iter_parameters()) or list(op.body)]

    for operation in operations:

        @given(case=operation.as_strategy(mode))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def no_server_error(case: Any) -> None:
            response = case.call_and_validate(headers=AUTH, checks=[not_a_server_error])
            STATUSES[response.status_code] += 1

        no_server_error()


def test_the_fuzzer_got_past_auth_into_the_api() -> None:
    if not STATUSES:
        pytest.skip("runs after the fuzz test of this module")
    assert STATUSES[202] > 0, STATUSES  # jobs were queued
    assert STATUSES[422] > 0, STATUSES  # and malformed ones refused
    assert not any(status >= 500 for status in STATUSES), STATUSES
    print(f"fuzzed statuses: {dict(sorted(STATUSES.items()))}")
