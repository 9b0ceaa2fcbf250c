"""gRPC server bootstrap: interceptors, health, reflection and graceful shutdown.

`build_server` builds without starting; `serve` starts, waits for SIGTERM/SIGINT and drains
in-flight calls for the grace period before it returns.
"""

from __future__ import annotations

import asyncio
import gc
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mlmesh_common.config import DEFAULT_MAX_MESSAGE_BYTES
from mlmesh_common.errors import ERROR_DOMAIN, DomainError, InvalidArgument, ResourceExhausted
from mlmesh_common.http import (
    HTTP_CODE_HEADER,
    HttpResponseRule,
    http_rules,
    with_declared_status,
)
from mlmesh_common.tenancy import TENANT_HEADER

log = structlog.get_logger("mlmesh.rpc")

REQUEST_ID_HEADER = "x-request-id"
_QUIET_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")
MAX_METADATA_BYTES = 128 * 1024
MAX_ERROR_TEXT = 2_000


@dataclass(frozen=True)
class ServiceBinding:
    """One gRPC service to host: its full name, the generated `add_..._to_server`, the servicer."""

    name: str
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: Any


# A call that fails for a reason other than a DomainError is given to these in turn; the first
# DomainError one returns is the caller's answer (a database that cannot be reached is
# UNAVAILABLE, not INTERNAL).
ErrorTranslator = Callable[[BaseException], DomainError | None]


def _bounded(text: str) -> str:
    """Text an error echoes from the request (a filter, a key), cut to MAX_ERROR_TEXT: the
    message travels twice in the trailers (grpc-message and the status details), which must
    stay within what the gateway and clients accept."""
    return text if len(text) <= MAX_ERROR_TEXT else f"{text[:MAX_ERROR_TEXT]}… (cut)"


def _status_for(error: DomainError) -> status_pb2.Status:
    metadata = {key: _bounded(value) for key, value in error.metadata.items()}
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    details = [detail]
    if error.retry_after_s is not None:
        retry = any_pb2.Any()
        delay = error_details_pb2.RetryInfo()
        delay.retry_delay.FromMilliseconds(round(error.retry_after_s * 1000))
        retry.Pack(delay)
        details.append(retry)
    return status_pb2.Status(
        code=error.code.value[0], message=_bounded(error.message), details=details
    )


async def _abort(context: grpc.aio.ServicerContext, error: DomainError) -> None:
    status = _status_for(error)
    trailing = [("grpc-status-details-bin", status.SerializeToString())]
    if error.http_status is not None:
        trailing.append((HTTP_CODE_HEADER, str(error.http_status)))
    if error.retry_after_s is not None:
        # Whole seconds, at least 1 (RFC 9110); REST callers get it as a header.
        trailing.append(("retry-after", str(max(1, math.ceil(error.retry_after_s)))))
    await context.abort(error.code, status.message, trailing_metadata=tuple(trailing))


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


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise DecodeError("truncated varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def _undecodable_field(message_class: Any, data: bytes) -> str | None:
    """The dotted path of the field whose bytes do not decode, found by decoding each field
    alone and descending into message fields; None when the framing itself is broken."""
    fields = message_class.DESCRIPTOR.fields_by_number
    pos = 0
    try:
        while pos < len(data):
            start = pos
            key, pos = _varint(data, pos)
            wire_type = key & 7
            payload = pos
            if wire_type == 0:
                _, pos = _varint(data, pos)
            elif wire_type == 2:
                length, payload = _varint(data, pos)
                pos = payload + length
            elif wire_type in (1, 5):
                pos += 8 if wire_type == 1 else 4
            else:
                return None
            try:
                message_class.FromString(data[start:pos])
            except DecodeError:
                field = fields.get(key >> 3)
                if field is None:
                    return None
                nested = field.message_type
                if nested is not None and not nested.GetOptions().map_entry and wire_type == 2:
                    inner = _undecodable_field(GetMessageClass(nested), data[payload:pos])
                    if inner:
                        return f"{field.name}.{inner}"
                return field.name
    except DecodeError:
        return None
    return None


def decode_request(deserialize: Callable[[bytes], Any], data: bytes) -> Any:
    """The request message, or a 400 naming the field that does not decode (the gateway's
    transcoder passes a JSON object given to a map's string value on as corrupt bytes)."""
    try:
        return deserialize(data)
    except DecodeError as error:
        message_class = getattr(deserialize, "__self__", None)
        name = _undecodable_field(message_class, data) if message_class is not None else None
        what = message_class.DESCRIPTOR.name if message_class is not None else "request"
        problem = f"the value of field {name!r} has the wrong type" if name else str(error)
        raise InvalidArgument(
            f"the {what} could not be decoded: {problem}",
            reason="UNDECODABLE_REQUEST",
            metadata={"field": name} if name else {},
        ) from error


class CallInterceptor(grpc.aio.ServerInterceptor):
    """The one interceptor of every call: logs it with its request id, decodes its request (an
    undecodable one is a 400), maps domain exceptions to gRPC status codes (`translators` map
    other failures, a dependency's, to domain exceptions) and sends a successful unary call's
    declared HTTP status (`http_rules`, see mlmesh_common.http). With `max_in_flight`, a call
    beyond that many unary calls at once is refused RESOURCE_EXHAUSTED with a retry hint
    instead of queueing.

    A method's wrapped handler is built on its first call and reused: the call's own values
    (request id, tenant) are read inside it, from the call's metadata."""

    def __init__(
        self,
        translators: Sequence[ErrorTranslator] = (),
        max_in_flight: int = 0,
        retry_after_s: float = 1.0,
        http_rules: Mapping[str, HttpResponseRule] | None = None,
    ) -> None:
        self._translators = tuple(translators)
        self._max_in_flight = max_in_flight
        self._retry_after_s = retry_after_s
        self._http_rules = dict(http_rules or {})
        self._in_flight = 0
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    def _translate(self, error: BaseException) -> DomainError | None:
        for translate in self._translators:
            mapped = translate(error)
            if mapped is not None:
                return mapped
        return None

    def _overloaded(self) -> ResourceExhausted:
        return ResourceExhausted(
            f"the server is handling its limit of {self._max_in_flight} calls; retry later",
            reason="TOO_MANY_REQUESTS_IN_FLIGHT",
            metadata={"max_in_flight": str(self._max_in_flight)},
            retry_after_s=self._retry_after_s,
        )

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        wrapped = self._handlers.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:  # an unknown method: gRPC answers UNIMPLEMENTED
                return None
            wrapped = self._handlers[method] = self._wrap(method, handler)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if method.startswith(_QUIET_PREFIXES):
            return handler
        # The wrapped handlers take the raw bytes and decode them inside the error mapping.
        deserialize = handler.request_deserializer or (lambda data: data)
        if handler.unary_unary is not None:
            inner = handler.unary_unary
            rule = self._http_rules.get(method)
            if rule is not None:
                inner = with_declared_status(rule, inner)

            async def unary_unary(data, context):
                request_id, tenant = _call_fields(context)
                with structlog.contextvars.bound_contextvars(
                    request_id=request_id, method=method, tenant=tenant
                ):
                    started = time.perf_counter()
                    code = grpc.StatusCode.OK
                    admitted = not 0 < self._max_in_flight <= self._in_flight
                    self._in_flight += admitted
                    try:
                        if not admitted:
                            raise self._overloaded()
                        return await inner(decode_request(deserialize, data), context)
                    except DomainError as error:
                        code = error.code
                        await _abort(context, error)
                    except (asyncio.CancelledError, grpc.aio.AbortError):
                        code = grpc.StatusCode.CANCELLED
                        raise
                    except Exception as error:
                        mapped = self._translate(error)
                        if mapped is None:
                            code = grpc.StatusCode.INTERNAL
                            log.exception("unhandled error")
                            await _abort_internal(context, request_id)
                        else:
                            code = mapped.code
                            log.warning("dependency failed", reason=mapped.reason, error=str(error))
                            await _abort(context, mapped)
                    finally:
                        self._in_flight -= admitted
                        log.info(
                            "rpc",
                            code=code.name,
                            duration_ms=round((time.perf_counter() - started) * 1000, 3),
                        )

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, response_serializer=handler.response_serializer
            )
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def unary_stream(data, context):
                request_id, tenant = _call_fields(context)
                with structlog.contextvars.bound_contextvars(
                    request_id=request_id, method=method, tenant=tenant
                ):
                    try:
                        request = decode_request(deserialize, data)
                        async for item in inner_stream(request, context):
                            yield item
                    except DomainError as error:
                        await _abort(context, error)
                    except (asyncio.CancelledError, grpc.aio.AbortError):
                        raise
                    except Exception as error:
                        mapped = self._translate(error)
                        if mapped is None:
                            log.exception("unhandled error")
                            await _abort_internal(context, request_id)
                        else:
                            await _abort(context, mapped)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, response_serializer=handler.response_serializer
            )
        return handler


def _call_fields(context: grpc.aio.ServicerContext) -> tuple[str, str]:
    """The call's request id (the gateway's, or a new one) and tenant, for its log lines."""
    request_id = tenant = ""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER:
            request_id = value
        elif key == TENANT_HEADER:
            tenant = value
    return request_id or uuid.uuid4().hex, tenant or "default"


def build_server(
    address: str,
    services: Sequence[ServiceBinding],
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    reuse_port: bool = False,
    health_servicer: health.aio.HealthServicer | None = None,
    translators: Sequence[ErrorTranslator] = (),
    max_in_flight: int = 0,
) -> tuple[grpc.aio.Server, int]:
    """Builds (does not start) a server hosting `services`, health (`health_servicer`, whose
    statuses the caller may set) and reflection. See CallInterceptor for `translators` and
    `max_in_flight` (0: no limit).

    `reuse_port`: the port is shared with this service's other worker processes (see
    `reserved_port` and `run_workers`); otherwise a port in use fails loudly."""
    server = grpc.aio.server(
        interceptors=[
            CallInterceptor(
                translators, max_in_flight, http_rules=http_rules(b.name for b in services)
            )
        ],
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # Above anything the gateway lets through (request headers up to 60 KiB, and its
            # copy of the URL in x-envoy-original-path): a long query value reaches the
            # service's own checks (400), not gRPC's metadata limit (RESOURCE_EXHAUSTED, 429).
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
            # A port already in use must fail loudly, not be shared with another process
            # (workers share theirs only after `reserved_port` has checked it was free).
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ],
    )
    health_servicer = health_servicer or health.aio.HealthServicer()
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


async def serve(
    server: grpc.aio.Server,
    port: int,
    grace_s: float,
    service: str,
    *,
    health_servicer: health.aio.HealthServicer | None = None,
    drain_delay_s: float = 0.0,
    on_stopping: Callable[[], None] | None = None,
) -> None:
    """Starts `server` and returns after SIGTERM/SIGINT once in-flight calls have drained.

    With `health_servicer`, a SIGTERM first turns health NOT_SERVING and keeps serving for
    `drain_delay_s`, so that load balancers (the gateway's health checks, readiness probes)
    stop sending new calls before the server stops taking them. `on_stopping` is called at
    the signal, before that delay (e.g. to stop taking new background work)."""
    await server.start()
    # What the process holds from here on (imported modules, settings, the store's engine) is
    # never garbage: out of the collector's sight, the collections that requests' own objects
    # trigger no longer walk it (a 1,000-point log-batch: about a third less CPU).
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("serving", service=service, port=port, pid=os.getpid())
    await stop.wait()
    log.info("shutting down", service=service, grace_s=grace_s, drain_delay_s=drain_delay_s)
    if on_stopping is not None:
        on_stopping()
    if health_servicer is not None:
        await health_servicer.enter_graceful_shutdown()
        if drain_delay_s > 0:
            await asyncio.sleep(drain_delay_s)
    await server.stop(grace_s)
    log.info("stopped", service=service, pid=os.getpid())


@contextmanager
def reserved_port(host: str, port: int) -> Iterator[int]:
    """Holds `host:port` (port 0: a free one) for worker processes that each bind it with
    SO_REUSEPORT, the kernel spreading connections among them; yields the port.

    The port is first bound without SO_REUSEPORT, so that one held by any other process fails
    loudly here, as in a single-process server; the socket held while the workers run (bound,
    never listening, so it receives no connections) keeps sockets without SO_REUSEPORT out."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As gRPC does: connections of an earlier run in TIME_WAIT do not hold the port.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        port = probe.getsockname()[1]
    held = socket.socket(family, socket.SOCK_STREAM)
    try:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind((host, port))
        yield port
    finally:
        held.close()


def run_workers(
    count: int, worker: Callable[[], None], service: str, *, stop_timeout_s: float = 30.0
) -> int:
    """Runs `worker()` in `count` forked processes and waits for all of them; returns the exit
    status for the parent (0 when every worker stopped cleanly).

    Each worker runs its own asyncio loop and gRPC server (`serve`). SIGTERM or SIGINT to the
    parent is passed on to every worker, and each drains its in-flight calls as a single
    server does. A worker that exits on its own stops the others: the service is whole or
    not running, and its supervisor restarts it. A worker still running `stop_timeout_s` after
    it was told to stop (longer than its drain and grace periods) is killed. The parent must not
    have created any gRPC object before (gRPC's core does not survive a fork)."""
    context = multiprocessing.get_context("fork")
    stopping = False
    deadline: float | None = None
    processes: list[multiprocessing.process.BaseProcess] = []

    def stop_all(signum: int = signal.SIGTERM, _frame: object = None) -> None:
        nonlocal stopping, deadline
        stopping = True
        if deadline is None:
            deadline = time.monotonic() + stop_timeout_s
        for process in processes:
            if process.exitcode is None and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop_all) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for index in range(count):
            process = context.Process(
                target=_worker_main, args=(worker,), name=f"{service}-worker-{index}"
            )
            process.start()
            processes.append(process)
            if stopping:
                break
        if stopping:  # a signal during a start: that worker may not have been told yet
            stop_all()
        log.info("workers started", service=service, workers=[p.pid for p in processes])
        status = 0
        while any(p.exitcode is None for p in processes):
            running = [p for p in processes if p.exitcode is None]
            # Woken at least each second: a signal handler may set the deadline meanwhile.
            left = 1.0 if deadline is None else min(1.0, max(0.0, deadline - time.monotonic()))
            ready = multiprocessing.connection.wait([p.sentinel for p in running], left)
            if not ready and deadline is not None and time.monotonic() >= deadline:
                for process in running:
                    log.error("worker did not stop in time; killing it", pid=process.pid)
                    process.kill()
                    process.join()
                return 1
            for process in running:
                if process.exitcode is None:
                    continue
                process.join()
                # Killed by the forwarded SIGTERM before its loop took the signal over: it
                # was not serving yet, so it had nothing to drain.
                clean = process.exitcode in (0, -signal.SIGTERM)
                if not (stopping and clean):
                    log.error("worker exited", pid=process.pid, exitcode=process.exitcode)
                    status = status or 1
                    if not stopping:
                        stop_all()
        return status
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _worker_main(worker: Callable[[], None]) -> None:
    # The parent's handlers forward signals; a worker handles its own (in `serve`).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    worker()
