"""Runs ui/e2e/browser.mjs (Playwright driving Debian's chromium) against a gateway that serves
the built UI, for the browser tests of every service."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from gateway.envoy_config import UI_DIST

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "ui" / "e2e" / "browser.mjs"
# Screenshots, kept as test artifacts (git-ignored).
RESULTS = ROOT / "ui" / "test-results"


def chromium() -> str:
    # `make test` installs it (tools/ensure_chromium.sh); a missing browser fails, never skips.
    path = os.environ.get("MLMESH_CHROMIUM", "/usr/bin/chromium")
    if not Path(path).is_file():
        pytest.fail(f"{path} is missing: run `bash tools/ensure_chromium.sh` (make test does)")
    return path


def built_ui() -> None:
    if not (UI_DIST / "index.html").is_file():
        pytest.fail(f"{UI_DIST} has no build: run `make ui` (make setup does)")


def run_browser(base_url: str, steps: str, data: dict) -> None:
    """Runs the browser script's `steps` group; its output is the failure message."""
    built_ui()
    RESULTS.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "BASE_URL": base_url,
        "CHROMIUM": chromium(),
        "RESULTS": str(RESULTS),
        "E2E_STEPS": steps,
        "E2E_DATA": json.dumps(data),
    }
    result = subprocess.run(
        ["node", str(SCRIPT)],
        cwd=ROOT / "ui",
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, f"browser tests failed:\n{result.stdout}\n{result.stderr}"
