"""Text every store can keep: PostgreSQL refuses the NUL character (U+0000) in text and JSON,
so it is a 400 everywhere, on every backend alike, before anything is written."""

from __future__ import annotations

from typing import Any

from mlmesh_common.errors import InvalidArgument


def nul_path(value: Any, path: str) -> str | None:
    """The path of the first string in `value` (nested dicts and lists, keys included) that
    holds a NUL character, or None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = nul_path(key, f"{path} key") or nul_path(item, f"{path}.{key}")
            if found:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = nul_path(item, f"{path}[{index}]")
            if found:
                return found
    return None


def check_no_nul(value: Any, field: str) -> None:
    found = nul_path(value, field)
    if found:
        raise InvalidArgument(
            f"{found} contains a NUL character (U+0000), which text cannot hold",
            reason="INVALID_CHARACTER",
            metadata={"field": found},
        )
