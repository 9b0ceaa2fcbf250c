"""Property-based fuzzing of the training REST API (models, datasets, tasks) from its own OpenAPI
document, through the real gateway: never a 5xx, always the documented shapes."""

from __future__ import annotations

from tests.helpers.fuzz import fuzz_api, fuzz_seed, fuzz_wrong_types


def test_training_api_never_5xx(training_gateway):
    fuzz_api(
        training_gateway.base_url,
        "^/api/v1/(models|datasets|tasks)",
        min_operations=17,
        max_examples=10,
        headers={"x-tenant-id": "fuzz"},
    )


def test_training_api_never_5xx_with_a_new_seed_each_run(training_gateway):
    # Each run explores other cases than the fixed one above; the printed seed replays one.
    fuzz_api(
        training_gateway.base_url,
        "^/api/v1/(models|datasets|tasks)",
        min_operations=17,
        max_examples=8,
        headers={"x-tenant-id": "fuzz-seeded"},
        seed=fuzz_seed(),
    )


def test_every_training_body_field_of_a_wrong_type_is_a_4xx(training_gateway):
    fuzz_wrong_types(
        training_gateway.base_url,
        "^/api/v1/(models|datasets|tasks)",
        min_operations=8,
        headers={"x-tenant-id": "fuzz-types"},
    )
