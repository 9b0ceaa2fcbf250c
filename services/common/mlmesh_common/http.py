"""The HTTP status of a REST call, chosen by the service and applied by the gateway."""

from __future__ import annotations

import grpc

from mlmesh_common.server import HTTP_CODE_HEADER


async def set_http_status(
    context: grpc.aio.ServicerContext, code: int, location: str | None = None
) -> None:
    """Asks the gateway to answer `code` (201, 202 or 204) instead of 200 on success.

    Sends initial metadata `x-http-code` (and `location`, the path of a created resource),
    which the gateway's Lua filter turns into the status and the `Location` header. Call it at
    most once per call, before returning the response; native gRPC callers just see metadata.
    """
    metadata = [(HTTP_CODE_HEADER, str(code))]
    if location is not None:
        metadata.append(("location", location))
    await context.send_initial_metadata(tuple(metadata))
