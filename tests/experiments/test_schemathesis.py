"""Property-based fuzzing of the experiments REST API from its own OpenAPI document, through the
real gateway: whatever schemathesis sends, the answer is never a 5xx and matches the document."""

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


def test_experiments_api_never_5xx(registry_gateway):
    schema = schemathesis.openapi.from_url(f"{registry_gateway.base_url}/api/v1/openapi.json")
    operations = [
        result.ok()
        for result in schema.include(path_regex="^/api/v1/experiments").get_all_operations()
    ]
    assert len(operations) >= 18, [op.label for op in operations]
    statuses: list[int] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=15,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def fuzz(case):
            response = case.call_and_validate(
                base_url=registry_gateway.base_url,
                headers={"x-tenant-id": "fuzz"},
                checks=CHECKS,
            )
            statuses.append(response.status_code)

        fuzz()
    # Fuzzing reached the services: both accepted and refused requests were seen.
    assert any(code < 300 for code in statuses) and any(400 <= code < 500 for code in statuses)
