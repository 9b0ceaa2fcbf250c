"""gRPC server bootstrap: interceptors, health, reflection and graceful shutdown.

`build_server` builds without starting; `serve` starts, waits for SIGTERM/SIGINT and drains
in-flight calls for the grace period before it returns.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mlmesh_common.errors import ERROR_DOMAIN, DomainError
from mlmesh_common.tenancy import TENANT_HEADER

log = structlog.get_logger("mlmesh.rpc")

REQUEST_ID_HEADER = "x-request-id"
# Initial/trailing metadata the gateway's Lua filter turns into the HTTP status (201, 204, 422).
HTTP_CODE_HEADER = "x-http-code"
_QUIET_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


@dataclass(frozen=True)
class ServiceBinding:
    """One gRPC service to host: its full name, the generated `add_..._to_server`, the servicer."""

    name: str
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: Any


def _status_for(error: DomainError) -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(
        reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    return status_pb2.Status(code=error.code.value[0], message=error.message, details=[detail])


async def _abort(context: grpc.aio.ServicerContext, error: DomainError) -> None:
    trailing = [("grpc-status-details-bin", _status_for(error).SerializeToString())]
    if error.http_status is not None:
        trailing.append((HTTP_CODE_HEADER, str(error.http_status)))
    await context.abort(error.code, error.message, trailing_metadata=tuple(trailing))


async def _abort_internal(context: grpc.aio.ServicerContext, request_id: str) -> None:
    status = status_pb2.Status(
        code=code_pb2.INTERNAL, message=f"internal error (request id {request_id})"
    )
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=ERROR_DOMAIN))
    status.details.append(info)
    await context.abort(
        grpc.StatusCode.INTERNAL,
        status.message,
        trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),),
    )


class CallInterceptor(grpc.aio.ServerInterceptor):
    """Logs every call with its request id and maps domain exceptions to gRPC status codes."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(_QUIET_PREFIXES):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        request_id = metadata.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        fields = {
            "request_id": request_id,
            "method": method,
            "tenant": metadata.get(TENANT_HEADER) or "default",
        }
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary_unary(request, context):
                with structlog.contextvars.bound_contextvars(**fields):
                    started = time.perf_counter()
                    code = grpc.StatusCode.OK
                    try:
                        return await inner(request, context)
                    except DomainError as error:
                        code = error.code
                        await _abort(context, error)
                    except (asyncio.CancelledError, grpc.aio.AbortError):
                        code = grpc.StatusCode.CANCELLED
                        raise
                    except Exception:
                        code = grpc.StatusCode.INTERNAL
                        log.exception("unhandled error")
                        await _abort_internal(context, request_id)
                    finally:
                        log.info(
                            "rpc",
                            code=code.name,
                            duration_ms=round((time.perf_counter() - started) * 1000, 3),
                        )

            return grpc.unary_unary_rpc_method_handler(
                unary_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def unary_stream(request, context):
                with structlog.contextvars.bound_contextvars(**fields):
                    try:
                        async for item in inner_stream(request, context):
                            yield item
                    except DomainError as error:
                        await _abort(context, error)
                    except (asyncio.CancelledError, grpc.aio.AbortError):
                        raise
                    except Exception:
                        log.exception("unhandled error")
                        await _abort_internal(context, request_id)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def build_server(
    address: str,
    services: Sequence[ServiceBinding],
    *,
    max_message_bytes: int = 256 * 1024 * 1024,
) -> tuple[grpc.aio.Server, int]:
    """Builds (does not start) a server hosting `services`, health and reflection."""
    server = grpc.aio.server(
        interceptors=[CallInterceptor()],
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # A port already in use must fail loudly, not be shared with another process.
            ("grpc.so_reuseport", 0),
        ],
    )
    health_servicer = health.aio.HealthServicer()
    for binding in services:
        binding.add_to_server(binding.servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [b.name for b in services]
    reflection.enable_server_reflection(
        [
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    # grpc raises RuntimeError when the address cannot be bound.
    return server, server.add_insecure_port(address)


async def serve(server: grpc.aio.Server, port: int, grace_s: float, service: str) -> None:
    """Starts `server` and returns after SIGTERM/SIGINT once in-flight calls have drained."""
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("serving", service=service, port=port)
    await stop.wait()
    log.info("shutting down", service=service, grace_s=grace_s)
    await server.stop(grace_s)
    log.info("stopped", service=service)
