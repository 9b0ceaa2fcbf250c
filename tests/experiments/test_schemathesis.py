"""Property-based fuzzing of the experiments REST API from its own OpenAPI document, through the
real gateway: whatever schemathesis sends, the answer is never a 5xx and matches the document."""

from __future__ import annotations

from tests.helpers.fuzz import fuzz_api


def test_experiments_api_never_5xx(registry_gateway):
    fuzz_api(
        registry_gateway.base_url,
        "^/api/v1/experiments",
        min_operations=18,
        max_examples=15,
        headers={"x-tenant-id": "fuzz"},
    )
