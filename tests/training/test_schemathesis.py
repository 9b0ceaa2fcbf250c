"""Property-based fuzzing of the training REST API (models, datasets, tasks) from its own OpenAPI
document, through the real gateway: never a 5xx, always the documented shapes."""

from __future__ import annotations

from tests.helpers.fuzz import fuzz_api


def test_training_api_never_5xx(training_gateway):
    fuzz_api(
        training_gateway.base_url,
        "^/api/v1/(models|datasets|tasks)",
        min_operations=17,
        max_examples=10,
        headers={"x-tenant-id": "fuzz"},
    )
