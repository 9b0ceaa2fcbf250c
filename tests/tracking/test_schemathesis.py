"""Property-based fuzzing of the tracking REST API from its own OpenAPI document, through the
real gateway: whatever schemathesis sends, the answer is never a 5xx and matches the document."""

from __future__ import annotations

from tests.helpers.fuzz import FuzzTarget, fuzz_suite

(
    test_api_never_5xx,
    test_api_never_5xx_with_a_new_seed_each_run,
    test_every_body_field_of_a_wrong_type_is_a_4xx,
) = fuzz_suite(
    FuzzTarget(
        gateway_fixture="gateway",
        path_regex="^/api/v1/tracking/",
        min_operations=7,
        min_body_operations=1,
        max_examples=25,
        seeded_examples=15,
        own_tenants=False,
    )
)
