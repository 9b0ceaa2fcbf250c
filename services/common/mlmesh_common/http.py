"""The HTTP status of a REST call, declared on each RPC in the protos and applied by the gateway.

An RPC's `(mlmesh.api.v1.http_response)` option names its success status (201, 202, 204) and,
for what it creates or starts, a `Location`; `with_declared_status` sends them to the gateway
as initial metadata `x-http-code` and `location`, which its Lua filter turns into the status
and the header. Native gRPC callers just see metadata.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass

import grpc
from google.protobuf import descriptor_pool

from mlmesh.api.v1 import http_pb2

# Initial/trailing metadata the gateway's Lua filter turns into the HTTP status (201, 204, 422).
HTTP_CODE_HEADER = "x-http-code"
_FIELD = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
# A call's answer instead of its declared status, set by the servicer (see answer_instead).
_INSTEAD: ContextVar[int | None] = ContextVar("mlmesh_http_instead", default=None)


def answer_instead(code: int) -> None:
    """Within a call, answers `code` instead of the RPC's declared status, without Location:
    for the exception to its rule (200 for a create that found the resource already there)."""
    _INSTEAD.set(code)


async def set_http_status(
    context: grpc.aio.ServicerContext, code: int, location: str | None = None
) -> None:
    """Asks the gateway to answer `code` instead of 200 on success (and `location`, the path
    of a created resource). At most once per call, before the response is returned."""
    metadata = [(HTTP_CODE_HEADER, str(code))]
    if location is not None:
        metadata.append(("location", location))
    await context.send_initial_metadata(tuple(metadata))


@dataclass(frozen=True)
class HttpResponseRule:
    status: int
    location: str  # a path template over the response's fields; "" for none

    def location_of(self, response) -> str | None:
        if not self.location:
            return None
        return _FIELD.sub(lambda match: str(getattr(response, match[1])), self.location)


def http_rules(service_names: Iterable[str]) -> dict[str, HttpResponseRule]:
    """`/package.Service/Method` → its declared rule, for the methods of `service_names` that
    declare one (their generated modules must be imported)."""
    pool = descriptor_pool.Default()
    rules = {}
    for name in service_names:
        try:
            service = pool.FindServiceByName(name)
        except KeyError:  # a generic handler without generated descriptors declares nothing
            continue
        for method in service.methods:
            options = method.GetOptions()
            if not options.HasExtension(http_pb2.http_response):
                continue
            declared = options.Extensions[http_pb2.http_response]
            if declared.status:
                rules[f"/{name}/{method.name}"] = HttpResponseRule(
                    declared.status, declared.location
                )
    return rules


def with_declared_status(rule: HttpResponseRule, inner):
    """`inner` (a unary-unary behaviour) sending its successful answer's declared status and
    location; errors are left to the error table (the call's exception passes through
    untouched). Applied by `mlmesh_common.server.CallInterceptor`, once per method."""

    async def unary_unary(request, context):
        token = _INSTEAD.set(None)
        try:
            response = await inner(request, context)
            instead = _INSTEAD.get()
        finally:
            _INSTEAD.reset(token)
        if instead is None:
            await set_http_status(context, rule.status, rule.location_of(response))
        elif instead != 200:
            await set_http_status(context, instead)
        return response

    return unary_unary
