"""The caller's tenant, from gRPC metadata `x-tenant-id` (set by the gateway under JWT auth)."""

from __future__ import annotations

import re

import grpc

from mlmesh_common.errors import InvalidArgument

TENANT_HEADER = "x-tenant-id"
DEFAULT_TENANT = "default"
_TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def validate_tenant(value: str) -> str:
    if not _TENANT_RE.match(value):
        raise InvalidArgument(
            f"invalid {TENANT_HEADER} {value!r}: 1-63 letters, digits, '.', '_' or '-'",
            reason="INVALID_TENANT",
        )
    return value


def tenant_of(context: grpc.aio.ServicerContext) -> str:
    """Tenant of the current call; `default` when the header is absent or empty."""
    for key, value in context.invocation_metadata() or ():
        if key == TENANT_HEADER and value:
            return validate_tenant(value.strip())
    return DEFAULT_TENANT
