"""Property-based fuzzing of the tracking REST API from its own OpenAPI document, through the
real gateway: whatever schemathesis sends, the answer is never a 5xx and matches the document."""

from __future__ import annotations

from tests.helpers.fuzz import fuzz_api, fuzz_seed, fuzz_wrong_types


def test_tracking_api_never_5xx(gateway):
    fuzz_api(gateway.base_url, "^/api/v1/tracking/", min_operations=7, max_examples=25)


def test_tracking_api_never_5xx_with_a_new_seed_each_run(gateway):
    # Each run explores other cases than the fixed one above; the printed seed replays one.
    fuzz_api(
        gateway.base_url, "^/api/v1/tracking/", min_operations=7, max_examples=15, seed=fuzz_seed()
    )


def test_every_tracking_body_field_of_a_wrong_type_is_a_4xx(gateway):
    fuzz_wrong_types(
        gateway.base_url,
        "^/api/v1/tracking/",
        min_operations=1,
        headers={"x-tenant-id": "fuzz-types"},
    )
