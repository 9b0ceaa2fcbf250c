"""The real Envoy gateway, on the wire: status conventions, JSON errors for Envoy's own replies,
request validation, body limits, health, CORS, request ids and native gRPC on the same port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import pytest
import requests

from tests.helpers.gateway import gateway_for
from tests.helpers.net import free_port, wait_for_http

WIDGETS = "/api/v1/widgets"


def error_info(response: requests.Response) -> dict:
    body = response.json()
    assert isinstance(body["code"], int) and body["code"] > 0, body
    assert isinstance(body["message"], str), body
    (info,) = [d for d in body["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    assert info["domain"] == "mlmesh.dev"
    return info


@pytest.fixture
def session(gateway):
    with requests.Session() as session:
        yield session


def create(session, gateway, name="w", size=3, **kwargs):
    return session.post(gateway.base_url + WIDGETS, json={"name": name, "size": size}, **kwargs)


def test_create_is_201_with_location(session, gateway):
    response = create(session, gateway, name="gear", size=7)
    assert response.status_code == 201, response.text
    widget = response.json()
    assert widget["name"] == "gear" and widget["size"] == 7
    assert response.headers["location"] == f"{WIDGETS}/{widget['widget_id']}"
    assert "x-http-code" not in response.headers
    assert not any(h.startswith("grpc-") for h in response.headers)


def test_delete_is_204_with_no_body_and_keep_alive_survives(session, gateway):
    ids = [create(session, gateway).json()["widget_id"] for _ in range(3)]
    for widget_id in ids:
        deleted = session.delete(f"{gateway.base_url}{WIDGETS}/{widget_id}")
        assert deleted.status_code == 204
        assert deleted.content == b""
        assert "content-type" not in deleted.headers
        # The next response on the same connection must parse cleanly: a stale body or
        # content-length from the 204 would corrupt it.
        gone = session.get(f"{gateway.base_url}{WIDGETS}/{widget_id}")
        assert gone.status_code == 404
        assert error_info(gone)["reason"] == "WIDGET_NOT_FOUND"


def test_204_then_200_on_one_raw_http11_connection(gateway):
    """Byte-level: after a 204, the next response on the same socket starts with a status line."""
    with requests.Session() as session:
        widget_id = create(session, gateway).json()["widget_id"]
    host, port = gateway.grpc_address.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        requests_bytes = (
            f"DELETE {WIDGETS}/{widget_id} HTTP/1.1\r\nHost: x\r\n\r\n"
            f"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ).encode()
        sock.sendall(requests_bytes)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    first, _, rest = raw.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 204"), raw
    assert b"content-length: 0" in first.lower() or b"content-length" not in first.lower()
    assert rest.startswith(b"HTTP/1.1 200"), raw


def test_async_is_202(session, gateway):
    response = session.post(gateway.base_url + WIDGETS + "/build/async", json={"name": "x"})
    assert response.status_code == 202, response.text
    assert response.json() == {"task_id": "t-1"}
    assert response.headers["location"] == "/api/v1/tasks/t-1"


def test_service_chosen_422_with_error_info(session, gateway):
    response = create(session, gateway, name="tiny")
    assert response.status_code == 422, response.text
    assert response.json()["code"] == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert error_info(response)["reason"] == "TOO_LITTLE_DATA"


def test_service_404_carries_metadata(session, gateway):
    response = session.get(f"{gateway.base_url}{WIDGETS}/nope")
    assert response.status_code == 404
    info = error_info(response)
    assert info["reason"] == "WIDGET_NOT_FOUND" and info["metadata"] == {"widget_id": "nope"}


def test_query_parameter_reaches_the_service(session, gateway):
    widget_id = create(session, gateway, name="plain").json()["widget_id"]
    response = session.get(f"{gateway.base_url}{WIDGETS}/{widget_id}", params={"label": "a b+c"})
    assert response.status_code == 200
    assert response.json()["name"] == "a b+c"


def test_a_long_query_value_reaches_the_service(session, gateway):
    """Envoy passes the URL on in x-envoy-original-path: the services' gRPC metadata limit
    is above the gateway's header limit, so a long value meets the service's own checks (not
    gRPC's RESOURCE_EXHAUSTED, a 429)."""
    widget_id = create(session, gateway, name="plain").json()["widget_id"]
    label = "l" * 40_000
    response = session.get(f"{gateway.base_url}{WIDGETS}/{widget_id}", params={"label": label})
    assert response.status_code == 200, response.text[:300]
    assert response.json()["name"] == label


def test_an_error_echoing_a_long_value_is_cut_not_a_5xx(session, gateway):
    """The message travels twice in the trailers; echoed in full, 30,000 characters would
    overflow what Envoy accepts (a 503)."""
    response = session.get(f"{gateway.base_url}{WIDGETS}/{'n' * 30_000}")
    assert response.status_code == 404, response.text[:300]
    body = response.json()
    assert body["message"].startswith("widget nnn") and body["message"].endswith("… (cut)")
    assert len(body["message"]) < 2_100
    info = error_info(response)
    assert info["reason"] == "WIDGET_NOT_FOUND"
    assert len(info["metadata"]["widget_id"]) < 2_100


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/api/v1/nothing-here", {}, 404),
        ("GET", "/", {}, 404),
        ("PUT", WIDGETS, {"json": {}}, 404),
        ("GET", WIDGETS + "/x", {"params": {"bogus": "1"}}, 400),
        ("POST", WIDGETS, {"json": {"name": "w", "size": "big"}}, 400),
        (
            "POST",
            WIDGETS,
            {"data": b"{not json", "headers": {"content-type": "application/json"}},
            400,
        ),
        ("POST", WIDGETS, {"json": {"name": "w" * (70 * 1024)}}, 413),
    ],
)
def test_envoy_own_errors_are_json_status(session, gateway, method, path, kwargs, status):
    response = session.request(method, gateway.base_url + path, **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    info = error_info(response)
    assert info["reason"]


def test_request_id_passes_through(session, gateway):
    widget_id = create(session, gateway).json()["widget_id"]
    response = session.get(
        f"{gateway.base_url}{WIDGETS}/{widget_id}", headers={"x-request-id": "req-12345"}
    )
    assert response.json()["request_id"] == "req-12345"
    assert response.headers["x-request-id"] == "req-12345"


def _log_entry(gateway, request_id: str) -> dict:
    entries: list[dict] = []
    deadline = time.monotonic() + 10  # Envoy flushes its access log about once a second
    while not entries and time.monotonic() < deadline:
        time.sleep(0.2)
        lines = gateway.log_path.read_text(errors="replace").splitlines()
        entries = [json.loads(line) for line in lines if f'"{request_id}"' in line]
    (entry,) = entries
    return entry


def test_access_log_records_the_client_request(session, gateway):
    widget_id = create(session, gateway).json()["widget_id"]
    path = f"{WIDGETS}/{widget_id}"
    session.get(gateway.base_url + path, headers={"x-request-id": "log-probe-1"})
    entry = _log_entry(gateway, "log-probe-1")
    assert (entry["method"], entry["path"], entry["status"]) == ("GET", path, 200)
    assert entry["upstream"] and entry["grpc_status"] == "0"


@pytest.mark.parametrize(
    ("method", "path", "body", "http", "grpc"),
    [
        ("GET", f"{WIDGETS}/missing", None, 404, "5"),  # NOT_FOUND, not UNIMPLEMENTED (12)
        ("POST", WIDGETS, {"name": "tiny"}, 422, "9"),  # FAILED_PRECONDITION, not UNKNOWN
        ("GET", "/api/v1/no-such-thing", None, 404, None),  # the gateway's own answer
    ],
)
def test_access_log_records_the_upstreams_own_grpc_status(
    session, gateway, method, path, body, http, grpc
):
    request_id = f"log-status-{uuid.uuid4().hex[:8]}"
    response = session.request(
        method, gateway.base_url + path, json=body, headers={"x-request-id": request_id}
    )
    assert response.status_code == http, response.text
    assert "grpc-status" not in response.headers
    entry = _log_entry(gateway, request_id)
    assert (entry["status"], entry["grpc_status"]) == (http, grpc)


def test_access_log_records_native_grpc_status(compiled, widget_stub, gateway):
    request_id = f"log-native-{uuid.uuid4().hex[:8]}"
    with pytest.raises(grpc.RpcError) as raised:
        widget_stub.GetWidget(
            compiled.pb2.GetWidgetRequest(widget_id="missing"),
            metadata=[("x-request-id", request_id)],
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert _log_entry(gateway, request_id)["grpc_status"] == "5"
    created = widget_stub.CreateWidget(
        compiled.pb2.CreateWidgetRequest(widget=compiled.pb2.Widget(name="logged"))
    )
    request_id = f"log-native-{uuid.uuid4().hex[:8]}"
    widget_stub.GetWidget(
        compiled.pb2.GetWidgetRequest(widget_id=created.widget_id),
        metadata=[("x-request-id", request_id)],
    )
    assert _log_entry(gateway, request_id)["grpc_status"] == "0"


def test_tenant_header_reaches_the_service_without_auth(session, gateway):
    response = create(session, gateway, headers={"x-tenant-id": "acme"})
    assert response.json()["tenant"] == "acme"


def test_native_grpc_on_the_same_port(compiled, widget_stub):
    created, call = widget_stub.CreateWidget.with_call(
        compiled.pb2.CreateWidgetRequest(widget=compiled.pb2.Widget(name="rpc"))
    )
    assert created.name == "rpc"
    # Native callers get the response untouched, the status hint only as metadata.
    assert ("x-http-code", "201") in call.initial_metadata()
    fetched = widget_stub.GetWidget(compiled.pb2.GetWidgetRequest(widget_id=created.widget_id))
    assert fetched.widget_id == created.widget_id
    with pytest.raises(grpc.RpcError) as failure:
        widget_stub.GetWidget(compiled.pb2.GetWidgetRequest(widget_id="nope"))
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND


def test_healthz_reports_each_backend(session, gateway):
    response = session.get(gateway.base_url + "/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "SERVING", "backends": {"gatewaytest": "SERVING"}}


def test_backend_down_is_503_json_and_unhealthy(compiled, tmp_path):
    down = gateway_for(compiled, tmp_path, f"127.0.0.1:{free_port()}", wait_healthy=False)
    try:
        response = requests.get(f"{down.base_url}{WIDGETS}/x", timeout=10)
        assert response.status_code == 503, response.text
        assert error_info(response)["reason"] == "UNAVAILABLE"
        health = requests.get(down.base_url + "/healthz", timeout=10)
        assert health.status_code == 503
        assert health.json() == {
            "status": "NOT_SERVING",
            "backends": {"gatewaytest": "NOT_SERVING"},
        }
    finally:
        down.stop()


def test_cors_preflight_allows_only_configured_origins(session, gateway):
    headers = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type",
    }
    allowed = session.options(
        gateway.base_url + WIDGETS, headers={**headers, "origin": "https://app.example.com"}
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "POST" in allowed.headers["access-control-allow-methods"]
    refused = session.options(
        gateway.base_url + WIDGETS, headers={**headers, "origin": "https://evil.example.com"}
    )
    assert "access-control-allow-origin" not in refused.headers
    simple = create(session, gateway, headers={"origin": "https://app.example.com"})
    assert simple.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "location" in simple.headers["access-control-expose-headers"]


def success_codes(operation: dict) -> list[str]:
    return [code for code in operation["responses"] if code.startswith("2")]


def test_openapi_is_served_with_declared_statuses_required_and_read_only_fields(session, gateway):
    response = session.get(gateway.base_url + "/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    paths = document["paths"]
    create = paths[WIDGETS]["post"]
    assert success_codes(create) == ["201"]
    assert create["responses"]["201"]["headers"] == {
        "Location": {
            "description": "Path of the resource: `/api/v1/widgets/{widget_id}`.",
            "schema": {"type": "string"},
        }
    }
    assert success_codes(paths[WIDGETS + "/{widget_id}"]["delete"]) == ["204"]
    assert success_codes(paths[WIDGETS + "/{widget_id}"]["get"]) == ["200"]
    assert success_codes(paths[WIDGETS + "/build/async"]["post"]) == ["202"]
    widget = document["components"]["schemas"]["mlmesh.gatewaytest.v1.Widget"]
    assert widget["required"] == ["name"]
    assert {name for name, field in widget["properties"].items() if field.get("readOnly")} == {
        "widget_id",
        "tenant",
        "request_id",
    }


def test_the_gateway_image_entry_point_renders_from_its_environment_and_serves(
    compiled, widget_server, tmp_path
):
    """`python -m gateway`, the image's entry point: the config from the environment alone
    (as deploy/k8s's ConfigMap gateway-env gives it), then Envoy serving it."""
    port, admin = free_port(), free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "MLMESH_GATEWAY_PORT": str(port),
        "MLMESH_GATEWAY_ADMIN_PORT": str(admin),
        "MLMESH_GATEWAY_DESCRIPTOR": str(compiled.descriptor),
        "MLMESH_GATEWAY_OPENAPI": str(compiled.openapi),
        "MLMESH_GATEWAY_CONFIG_PATH": str(tmp_path / "envoy.yaml"),
        "MLMESH_GATEWAY_ENVOY_BIN": str(Path(sys.executable).parent / "envoy"),
        "MLMESH_GATEWAYTEST_UPSTREAM": widget_server.address,
    }
    log = (tmp_path / "envoy.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--disable-hot-restart", "--log-level", "warn"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{admin}/ready", 30, alive=lambda: process.poll() is None)
        response = requests.post(
            f"http://127.0.0.1:{port}{WIDGETS}", json={"name": "from-env"}, timeout=10
        )
        assert response.status_code == 201, response.text
        assert response.json()["name"] == "from-env"
    finally:
        process.terminate()
        process.wait(10)


def test_a_header_name_grpc_cannot_carry_is_dropped_not_a_500(session, gateway):
    """`a&b` is a legal HTTP header name but not gRPC metadata: the call still succeeds."""
    widget_id = create(session, gateway).json()["widget_id"]
    response = session.get(
        f"{gateway.base_url}{WIDGETS}/{widget_id}",
        headers={"chli&": "x", "x-request-id": "illegal-header-probe"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["request_id"] == "illegal-header-probe"
