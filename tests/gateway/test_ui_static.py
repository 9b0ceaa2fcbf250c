"""The web UI served by the real Envoy gateway from a build directory: files by exact path with
their content types and caching, index.html for `/` and every client-side route (deep links),
and the API and the gateway's own 404 untouched."""

from __future__ import annotations

import pytest
import requests

from tests.helpers.gateway import gateway_for

INDEX = b'<!doctype html><div id="root"></div><script src="/assets/index-abc123.js"></script>'
SCRIPT = b"console.log('mlmesh');\n" * 2000  # larger than Envoy's default 4 KiB direct response


@pytest.fixture(scope="module")
def ui_gateway(compiled, widget_server, tmp_path_factory):
    build = tmp_path_factory.mktemp("ui-dist")
    (build / "assets").mkdir()
    (build / "index.html").write_bytes(INDEX)
    (build / "assets" / "index-abc123.js").write_bytes(SCRIPT)
    (build / "assets" / "index-abc123.css").write_text("body{margin:0}")
    gateway = gateway_for(
        compiled, tmp_path_factory.mktemp("gw-ui"), widget_server.address, ui_dir=build
    )
    yield gateway
    gateway.stop()


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/experiments",
        "/experiments/3f1c",
        "/runs/abc",
        "/compare?runs=a,b,c&diff=1",
        "/tracking",
        "/tracking/runs/0123",
        "/tracking/compare?runs=a,b",
        "/models/7",
        "/datasets",
        "/tasks/1",
        "/studies/spx-tune",
    ],
)
def test_every_client_route_answers_index_html(ui_gateway, path):
    response = requests.get(ui_gateway.base_url + path, timeout=5)
    assert response.status_code == 200, response.text
    assert response.content == INDEX
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"


def test_assets_by_exact_path_with_type_and_long_caching(ui_gateway):
    script = requests.get(ui_gateway.base_url + "/assets/index-abc123.js", timeout=5)
    assert script.status_code == 200
    assert script.content == SCRIPT
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert script.headers["cache-control"] == "public, max-age=31536000, immutable"
    style = requests.get(ui_gateway.base_url + "/assets/index-abc123.css", timeout=5)
    assert style.headers["content-type"] == "text/css; charset=utf-8"
    assert style.text == "body{margin:0}"


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/assets/missing.js"),
        ("GET", "/experimentsx"),
        ("GET", "/nope"),
        ("POST", "/"),
        ("DELETE", "/experiments/3f1c"),
    ],
)
def test_other_paths_and_methods_are_the_gateways_json_404(ui_gateway, method, path):
    response = requests.request(method, ui_gateway.base_url + path, timeout=5)
    assert response.status_code == 404
    assert response.json()["code"] == 5


def test_the_api_is_still_the_api(ui_gateway):
    created = requests.post(
        ui_gateway.base_url + "/api/v1/widgets", json={"name": "w", "size": 1}, timeout=5
    )
    assert created.status_code == 201, created.text
    unknown = requests.get(ui_gateway.base_url + "/api/v1/nothing", timeout=5)
    assert unknown.status_code == 404
    assert unknown.headers["content-type"].startswith("application/json")
