"""Schemathesis runs of the gateway's own OpenAPI document, shared by every service's suite."""

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


def fuzz_api(
    base_url: str,
    path_regex: str,
    *,
    min_operations: int,
    max_examples: int,
    headers: dict[str, str] | None = None,
) -> None:
    """Fuzzes every operation whose path matches `path_regex`: no answer may be a 5xx or stray
    from the document. Fails unless both accepted and refused requests were seen, so that a
    run that never reached the service cannot pass."""
    schema = schemathesis.openapi.from_url(f"{base_url}/api/v1/openapi.json")
    operations = [
        result.ok() for result in schema.include(path_regex=path_regex).get_all_operations()
    ]
    assert len(operations) >= min_operations, [op.label for op in operations]
    statuses: list[int] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=max_examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def fuzz(case):
            response = case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS)
            statuses.append(response.status_code)

        fuzz()
    assert any(code < 300 for code in statuses) and any(400 <= code < 500 for code in statuses)
