"""docs/reliability.md, written from a run of tests/reliability: each test adds its section (the
faults it injected, calls by status code, writes acknowledged and found, recovery times), and
the file is written once every section of the suite is there, so that running one test alone
leaves the committed document as it is."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"

HEADER = """# Reliability

Written by `tests/reliability` (part of `make test`) on its last full run: {when}, {machine}.
Every number below was measured by that run on loopback, with the real experiments service
process on a real PostgreSQL behind the real Envoy gateway (and two real training service
processes on one PostgreSQL database and one Ray cluster for the training sections); the faults
are real signals and stopped servers. The tests assert counts (nothing lost, nothing
duplicated, nothing partial, no 5xx other than UNAVAILABLE), never timings: the times are what
this machine took.

How each guarantee is built is described in [operations.md](operations.md#reliability).
"""


class Report:
    def __init__(self, expected: list[str]) -> None:
        self.expected = expected
        self.sections: dict[str, str] = {}

    def add(self, name: str, markdown: str) -> None:
        self.sections[name] = markdown.strip() + "\n"

    def complete(self) -> bool:
        return all(name in self.sections for name in self.expected)

    def write(self, path: Path = DOC) -> None:
        when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        machine = f"{os.cpu_count()} cores, Python {platform.python_version()}"
        parts = [HEADER.format(when=when, machine=machine)]
        parts += [self.sections[name] for name in self.expected]
        path.write_text("\n".join(parts))


def table(rows: list[tuple], header: tuple) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def statuses(counts: dict[str, int]) -> str:
    return ", ".join(f"{status}: {count:,}" for status, count in counts.items()) or "none"
