"""Property-based fuzzing of the tracking REST API from its own OpenAPI document, through the
real gateway: whatever schemathesis sends, the answer is never a 5xx and matches the document."""

from __future__ import annotations

from tests.helpers.fuzz import fuzz_api


def test_tracking_api_never_5xx(gateway):
    fuzz_api(gateway.base_url, "^/api/v1/tracking/", min_operations=7, max_examples=25)
