"""The shared server bootstrap: one error table, ErrorInfo details, tenant checks, health,
reflection and draining on shutdown, over a real grpc.aio server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mlmesh_common import errors
from mlmesh_common.server import HTTP_CODE_HEADER, ServiceBinding, build_server
from mlmesh_common.tenancy import tenant_of

SERVICE = "mlmesh.servertest.v1.ServerTestService"
ERRORS = {
    "InvalidArgument": (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    "NotFound": (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    "AlreadyExists": (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    "Conflict": (errors.Conflict, grpc.StatusCode.ABORTED),
    "FailedPrecondition": (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    "TooLittleData": (errors.TooLittleData, grpc.StatusCode.FAILED_PRECONDITION),
    "PermissionDenied": (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    "Unauthenticated": (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    "ResourceExhausted": (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    "Unavailable": (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
}


async def _raise(request: struct_pb2.Struct, context) -> struct_pb2.Struct:
    kind = request.fields["kind"].string_value
    if kind == "crash":
        raise RuntimeError("secret internals")
    if kind == "slow":
        await asyncio.sleep(1.0)
        return struct_pb2.Struct(fields={"done": struct_pb2.Value(bool_value=True)})
    if kind == "tenant":
        return struct_pb2.Struct(
            fields={"tenant": struct_pb2.Value(string_value=tenant_of(context))}
        )
    raise ERRORS[kind][0](f"{kind} happened", reason=f"{kind.upper()}_REASON", metadata={"k": "v"})


def _add(servicer, server):
    handler = grpc.unary_unary_rpc_method_handler(
        servicer,
        request_deserializer=struct_pb2.Struct.FromString,
        response_serializer=struct_pb2.Struct.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(SERVICE, {"Do": handler})]
    )


@pytest.fixture
async def server_address():
    server, port = build_server("127.0.0.1:0", [ServiceBinding(SERVICE, _add, _raise)])
    await server.start()
    yield server, f"127.0.0.1:{port}"
    await server.stop(None)


def _call(channel):
    return channel.unary_unary(
        f"/{SERVICE}/Do",
        request_serializer=struct_pb2.Struct.SerializeToString,
        response_deserializer=struct_pb2.Struct.FromString,
    )


def _request(kind: str) -> struct_pb2.Struct:
    return struct_pb2.Struct(fields={"kind": struct_pb2.Value(string_value=kind)})


@pytest.mark.parametrize("kind", sorted(ERRORS))
async def test_every_domain_error_maps_to_its_code_with_error_info(server_address, kind):
    _, address = server_address
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _call(channel)(_request(kind))
    error = raised.value
    assert error.code() == ERRORS[kind][1]
    assert error.details() == f"{kind} happened"
    trailing = dict(error.trailing_metadata())
    status = status_pb2.Status.FromString(trailing["grpc-status-details-bin"])
    assert status.code == ERRORS[kind][1].value[0]
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == f"{kind.upper()}_REASON" and info.domain == "mlmesh.dev"
    assert dict(info.metadata) == {"k": "v"}
    assert trailing.get(HTTP_CODE_HEADER) == ("422" if kind == "TooLittleData" else None)


async def test_unexpected_exception_is_internal_without_leaking(server_address):
    _, address = server_address
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _call(channel)(_request("crash"), metadata=(("x-request-id", "req-42"),))
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in raised.value.details() and "req-42" in raised.value.details()


async def test_tenant_from_metadata_default_and_invalid(server_address):
    _, address = server_address
    async with grpc.aio.insecure_channel(address) as channel:
        call = _call(channel)
        reply = await call(_request("tenant"))
        assert reply.fields["tenant"].string_value == "default"
        reply = await call(_request("tenant"), metadata=(("x-tenant-id", "acme-1"),))
        assert reply.fields["tenant"].string_value == "acme-1"
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(_request("tenant"), metadata=(("x-tenant-id", "../etc"),))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_health_and_reflection(server_address):
    _, address = server_address
    async with grpc.aio.insecure_channel(address) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        names = [
            s.name
            async for reply in stub.ServerReflectionInfo(iter([request]))
            for s in reply.list_services_response.service
        ]
    assert SERVICE in names and "grpc.health.v1.Health" in names


async def test_stop_drains_in_flight_calls(server_address):
    server, address = server_address
    async with grpc.aio.insecure_channel(address) as channel:
        in_flight = asyncio.ensure_future(_call(channel)(_request("slow")))
        await asyncio.sleep(0.2)
        await server.stop(5.0)
        reply = await in_flight
    assert reply.fields["done"].bool_value is True


def test_port_in_use_fails_loudly():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="bind"):
            build_server(f"127.0.0.1:{port}", [])
