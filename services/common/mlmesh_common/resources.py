"""Rules every resource API of the mesh shares: canonical UUID ids, epoch-millisecond times,
tenant ownership (404 when absent, 403 when another tenant's, for one resource or several) and
list paging with opaque page tokens."""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlmesh_common.errors import InvalidArgument, NotFound, PermissionDenied

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def new_id() -> str:
    return str(uuid.uuid4())


def now_ms() -> int:
    """The wall clock in epoch milliseconds, as resources record their times."""
    return time.time_ns() // 1_000_000


def is_uuid(value: str) -> bool:
    """Ids are canonical UUID strings; anything else cannot name a stored resource."""
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def check_owned(resource: Any, tenant: str, kind: str, resource_id: str) -> None:
    """404 when `resource` is None, 403 when it is another tenant's: checked before anything
    else about it is revealed."""
    if resource is None:
        raise NotFound(
            f"{kind} {resource_id} not found",
            reason=f"{kind.upper()}_NOT_FOUND",
            metadata={f"{kind}_id": resource_id},
        )
    if resource.tenant != tenant:
        raise PermissionDenied(
            f"{kind} {resource_id} belongs to another tenant",
            reason="TENANT_MISMATCH",
            metadata={f"{kind}_id": resource_id},
        )


def check_all_owned(found: Mapping[str, Any], ids: Sequence[str], tenant: str, kind: str) -> None:
    """For a request naming several resources (`found`: those that exist, by id): 403 when any
    is another tenant's, otherwise 404 listing every missing id."""
    foreign = [i for i in ids if i in found and found[i].tenant != tenant]
    if foreign:
        raise PermissionDenied(
            f"{kind}s belong to another tenant: {', '.join(foreign)}",
            reason="TENANT_MISMATCH",
            metadata={f"{kind}_ids": ",".join(foreign)},
        )
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFound(
            f"{kind}s not found: {', '.join(missing)}",
            reason=f"{kind.upper()}_NOT_FOUND",
            metadata={f"{kind}_ids": ",".join(missing)},
        )


@dataclass(frozen=True)
class Page:
    items: list
    total: int
    next_page_token: str


def page_window(limit: int, offset: int, page_token: str) -> tuple[int, int]:
    """(offset, limit) of the page asked for: a `page_token` wins over `offset`; limit 0 is the
    default (100) and anything above 1000 is clamped."""
    if limit < 0 or offset < 0:
        raise InvalidArgument("limit and offset must be >= 0", reason="INVALID_PAGE")
    if page_token:
        offset = _token_offset(page_token)
    return offset, min(limit or DEFAULT_LIMIT, MAX_LIMIT)


def page(items: list, offset: int, matches: int, *, total: int | None = None) -> Page:
    """A page of `items` starting at `offset` out of `matches`, with the token of the next one
    ("" on the last); `total` answered is `matches` unless given (-1: not counted)."""
    end = offset + len(items)
    token = ""
    if items and end < matches:
        token = base64.urlsafe_b64encode(json.dumps({"offset": end}).encode()).decode()
    return Page(items, matches if total is None else total, token)


def _token_offset(token: str) -> int:
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeError):
        offset = None
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise InvalidArgument(
            "invalid page_token: pass back a next_page_token from a previous response",
            reason="INVALID_PAGE_TOKEN",
        )
    return offset
