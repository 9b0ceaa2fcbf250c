"""The web UI's tracking views in a real browser (ui/e2e/browser.mjs, group "tracking"): MLflow
runs logged to a real mlflow server, read through the tracking service behind the real gateway.
The script checks the list, its server-side sort, a run's chart and a comparison against the
API's own answers."""

from __future__ import annotations

from tests.helpers.browser import run_browser


def test_tracking_views_in_a_browser(gateway, seed):
    run_browser(
        gateway.base_url,
        "tracking",
        {
            "trainA": seed.runs["train_a"],
            "trainB": seed.runs["train_b"],
            "acme": seed.runs["acme"],
        },
    )
