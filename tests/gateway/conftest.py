"""A test-only gRPC service (tests/gateway/protos) behind the real Envoy gateway, with the config
rendered by `gateway.envoy_config` from that service's own descriptor set."""

from __future__ import annotations

import asyncio
import importlib
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import structlog
from google.protobuf import empty_pb2

from gateway import openapi
from gateway.descriptors import load_descriptor_set
from mlmesh_common.errors import NotFound, TooLittleData
from mlmesh_common.server import ServiceBinding, build_server
from mlmesh_common.tenancy import tenant_of
from tests.helpers.gateway import gateway_for
from tests.helpers.net import free_port
from tools.gen_protos import compile_protos

PROTOS = Path(__file__).parent / "protos"
# For mlmesh/api/v1/http.proto, the declared-status option the test service uses.
MLMESH_PROTOS = Path(__file__).resolve().parents[2] / "protos"


@dataclass
class Compiled:
    descriptor: Path
    openapi: Path
    pb2: object
    grpc: object


@pytest.fixture(scope="session")
def compiled(tmp_path_factory) -> Compiled:
    root = tmp_path_factory.mktemp("gatewaytest-protos")
    gen, descriptor = root / "gen", root / "descriptors.pb"
    compile_protos(PROTOS, gen, descriptor, includes=[MLMESH_PROTOS])
    document = root / "openapi.json"
    document.write_text(openapi.render(load_descriptor_set(descriptor)))
    # The generated package is `mlmesh.gatewaytest.v1`, beside the real `mlmesh` stubs.
    import mlmesh

    mlmesh.__path__.append(str(gen / "mlmesh"))
    pb2 = importlib.import_module("mlmesh.gatewaytest.v1.widgets_pb2")
    pb2_grpc = importlib.import_module("mlmesh.gatewaytest.v1.widgets_pb2_grpc")
    return Compiled(descriptor, document, pb2, pb2_grpc)


class WidgetServicer:
    """Widgets in a dict; every convention a real service uses, in a few lines."""

    def __init__(self, pb2) -> None:
        self.pb2 = pb2
        self.widgets: dict[str, object] = {}

    def _echo(self, widget, context):
        reply = self.pb2.Widget()
        reply.CopyFrom(widget)
        reply.tenant = tenant_of(context)
        reply.request_id = structlog.contextvars.get_contextvars().get("request_id", "")
        return reply

    async def CreateWidget(self, request, context):
        if request.widget.name == "tiny":
            raise TooLittleData("widget too small", reason="TOO_LITTLE_DATA")
        widget = self.pb2.Widget(
            widget_id=uuid.uuid4().hex, name=request.widget.name, size=request.widget.size
        )
        self.widgets[widget.widget_id] = widget
        return self._echo(widget, context)

    async def GetWidget(self, request, context):
        widget = self.widgets.get(request.widget_id)
        if widget is None:
            raise NotFound(
                f"widget {request.widget_id} not found",
                reason="WIDGET_NOT_FOUND",
                metadata={"widget_id": request.widget_id},
            )
        reply = self._echo(widget, context)
        if request.label:
            reply.name = request.label
        return reply

    async def DeleteWidget(self, request, context):
        if self.widgets.pop(request.widget_id, None) is None:
            raise NotFound(f"widget {request.widget_id} not found", reason="WIDGET_NOT_FOUND")
        return empty_pb2.Empty()

    async def BuildWidgetAsync(self, request, context):
        return self.pb2.BuildTask(task_id="t-1")


class BackgroundServer:
    """A grpc.aio server on its own event loop thread, so that blocking tests can call it."""

    def __init__(self, binding: ServiceBinding) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._binding = binding
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> BackgroundServer:
        self._thread.start()
        self._server, _ = self._run(self._build())
        self._run(self._server.start())
        return self

    async def _build(self):
        return build_server(self.address, [self._binding])

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)

    def stop(self) -> None:
        self._run(self._server.stop(1))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="session")
def widget_server(compiled):
    servicer = WidgetServicer(compiled.pb2)
    binding = ServiceBinding(
        "mlmesh.gatewaytest.v1.WidgetService",
        compiled.grpc.add_WidgetServiceServicer_to_server,
        servicer,
    )
    server = BackgroundServer(binding).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gateway(compiled, widget_server, tmp_path_factory):
    gw = gateway_for(
        compiled,
        tmp_path_factory.mktemp("gw"),
        widget_server.address,
        cors_origins=["https://app.example.com"],
        max_body_bytes=64 * 1024,
    )
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def widget_stub(compiled, gateway):
    with grpc.insecure_channel(gateway.grpc_address) as channel:
        yield compiled.grpc.WidgetServiceStub(channel)
