"""Property-based fuzzing of the training REST API (models, datasets, tasks) from its own OpenAPI
document, through the real gateway: whatever schemathesis sends, the answer is never a 5xx and
matches the document."""

from __future__ import annotations

from tests.helpers.fuzz import FuzzTarget, fuzz_suite

(
    test_api_never_5xx,
    test_api_never_5xx_with_a_new_seed_each_run,
    test_every_body_field_of_a_wrong_type_is_a_4xx,
) = fuzz_suite(
    FuzzTarget(
        gateway_fixture="training_gateway",
        path_regex="^/api/v1/(models|datasets|tasks)",
        min_operations=17,
        min_body_operations=8,
        max_examples=10,
        seeded_examples=8,
    )
)
