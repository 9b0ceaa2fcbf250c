"""Property-based fuzzing of the REST API from its own OpenAPI document, through the real gateway:
whatever schemathesis sends, the answer is never a 5xx and matches the documented responses."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_tracking_api_never_5xx(gateway):
    schema = schemathesis.openapi.from_url(f"{gateway.base_url}/api/v1/openapi.json")
    operations = [
        result.ok()
        for result in schema.include(path_regex="^/api/v1/tracking/").get_all_operations()
    ]
    assert len(operations) >= 7, [op.label for op in operations]
    statuses: list[int] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def fuzz(case):
            response = case.call_and_validate(base_url=gateway.base_url, checks=CHECKS)
            statuses.append(response.status_code)

        fuzz()
    # Fuzzing reached the service: both accepted and refused requests were seen.
    assert any(code < 300 for code in statuses) and any(400 <= code < 500 for code in statuses)
