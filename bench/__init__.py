"""Side-by-side benchmarks of mlmesh against the systems it replaces; `make bench` runs them."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The harness reuses the test helpers (tests.helpers) and the gateway package, which live at the
# repository root, not in an installed distribution.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
