"""Named sections of docs/benchmarks.md that one harness owns and the others keep when they
rewrite the file: `<!-- NAME:begin -->` ... `<!-- NAME:end -->`."""

from __future__ import annotations

import re
from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def _pattern(name: str) -> re.Pattern[str]:
    begin, end = markers(name)
    return re.compile(re.escape(begin) + ".*?" + re.escape(end) + "\n?", re.S)


def existing_section(text: str, name: str) -> str | None:
    found = _pattern(name).search(text)
    return found.group(0) if found else None


def write_section(path: Path, name: str, section: str) -> None:
    """Replaces the named section of the report, or appends it."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = _pattern(name)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
