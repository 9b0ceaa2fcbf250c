"""The S3 artifact store (a real moto server on loopback) stopped and started again: uploads and
downloads fail fast with 503 UNAVAILABLE (ARTIFACT_STORE_UNAVAILABLE), the health of the service
is unaffected (its database is fine), and the same process serves artifacts again afterwards."""

from __future__ import annotations

import time

import boto3
from moto.server import ThreadedMotoServer

from tests.helpers.net import LOOPBACK, free_port, wait_for_tcp
from tests.reliability.load import API
from tests.reliability.report import table

BUCKET = "mlmesh-reliability"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
}


def _moto(port: int) -> ThreadedMotoServer:
    server = ThreadedMotoServer(ip_address=LOOPBACK, port=port, verbose=False)
    server.start()
    wait_for_tcp(LOOPBACK, port, timeout=30)
    return server


def test_s3_stopped_and_started(start_mesh, monkeypatch, reliability_report):
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    port = free_port()
    endpoint = f"http://{LOOPBACK}:{port}"
    server = _moto(port)
    try:
        boto3.session.Session().client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        mesh = start_mesh(
            MLMESH_ARTIFACT_URI=f"s3://{BUCKET}/artifacts",
            AWS_ENDPOINT_URL=endpoint,
            **AWS_ENV,
        )
        client = mesh.client()
        experiment = client.post(mesh.base_url + API, json={}).json()
        run = client.post(f"{mesh.base_url}{API}/runs", json={"experiment_id": experiment["id"]})
        run_path = f"{mesh.base_url}{API}/runs/{run.json()['id']}"

        def upload(name: str, data: bytes):
            return client.post(f"{run_path}/log-artifact", files={"file": (name, data)}, timeout=60)

        assert upload("before.txt", b"kept").status_code == 200
        server.stop()
        timings = {}
        started = time.monotonic()
        refused = upload("during.txt", b"lost")
        timings["upload refused after"] = time.monotonic() - started
        started = time.monotonic()
        unread = client.get(f"{run_path}/artifacts/before.txt", timeout=60)
        timings["download refused after"] = time.monotonic() - started
        health = mesh.service.health()
        for response in (refused, unread):
            assert response.status_code == 503, response.text
            reasons = {d.get("reason") for d in response.json()["details"]}
            assert "ARTIFACT_STORE_UNAVAILABLE" in reasons
        # The database is fine: the service stays in rotation for everything else.
        assert health == "SERVING"
        assert client.get(run_path, timeout=10).status_code == 200

        server = _moto(port)
        started = time.monotonic()
        again = upload("after.txt", b"back")
        timings["upload served again after the restart"] = time.monotonic() - started
        assert again.status_code == 200, again.text
        kept = client.get(f"{run_path}/artifacts/before.txt", timeout=60)
        assert kept.status_code == 200 and kept.content == b"kept"
        listed = client.get(f"{run_path}/artifacts", timeout=60).json()
        assert sorted(a["path"] for a in listed["artifacts"]) == ["after.txt", "before.txt"]
    finally:
        server.stop()

    reliability_report.add(
        "artifacts",
        f"""
## S3 artifact store stopped and started

The experiments service on an `s3://` artifact store served by a moto S3 server on loopback;
the moto server stopped, then started again on the same port (its objects kept). While it was
down, an upload and a download each answered 503 UNAVAILABLE (`ARTIFACT_STORE_UNAVAILABLE`,
after boto3's own retries); health stayed SERVING and run reads kept working; after the restart
the same process uploaded and downloaded again, and the failed upload left no record.

{table([(what, f"{seconds * 1000:,.0f} ms") for what, seconds in timings.items()], ("", "time"))}
""",
    )
