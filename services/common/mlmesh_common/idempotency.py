"""Idempotency keys: a client sends `x-idempotency-key` (HTTP header or gRPC metadata) with a
write, and a retry with the same key gets the first answer back instead of writing again."""

from __future__ import annotations

import hashlib
import re

import grpc
from google.protobuf.message import Message

from mlmesh_common.errors import InvalidArgument

IDEMPOTENCY_HEADER = "x-idempotency-key"
MAX_KEY_LENGTH = 255
# Printable ASCII without spaces: UUIDs, ULIDs and "writer-3/batch-17" all fit.
_KEY_RE = re.compile(r"^[!-~]{1,255}$")


def idempotency_key(context: grpc.aio.ServicerContext) -> str | None:
    """The call's idempotency key, None without one; 400 for a malformed one."""
    for key, value in context.invocation_metadata() or ():
        if key == IDEMPOTENCY_HEADER and value:
            if not _KEY_RE.match(value):
                raise InvalidArgument(
                    f"invalid {IDEMPOTENCY_HEADER}: 1-{MAX_KEY_LENGTH} printable ASCII characters"
                    " without spaces",
                    reason="INVALID_IDEMPOTENCY_KEY",
                )
            return value
    return None


def fingerprint(request: Message) -> str:
    """The request's type (one per RPC) and a digest of its content: a key sent again with
    another request is a client bug, refused rather than answered with the first answer."""
    digest = hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()
    return f"{request.DESCRIPTOR.full_name}:{digest}"
