"""The artifact stores (a local directory, and S3 on a real moto server on loopback), their path
rules, store URIs, and upload parsing."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from pathlib import Path

import boto3
import pytest
import requests
from botocore.config import Config
from hypothesis import given
from hypothesis import strategies as st
from moto.server import ThreadedMotoServer

from mlmesh_common.artifacts import (
    ArtifactEntry,
    ArtifactStore,
    LocalArtifactStore,
    S3ArtifactStore,
    artifact_key,
    check_relative_path,
    open_artifact_store,
    parse_upload,
)
from mlmesh_common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from tests.helpers.net import LOOPBACK, free_port, wait_for_tcp

BUCKET = "mlmesh-artifacts"
RUN = ("acme", "exp-1", "run-1")


def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Dummy credentials, and no developer profile or endpoint leaking into the tests.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on loopback with one bucket."""
    port = free_port()
    server = ThreadedMotoServer(ip_address=LOOPBACK, port=port, verbose=False)
    server.start()
    endpoint = f"http://{LOOPBACK}:{port}"
    try:
        wait_for_tcp(LOOPBACK, port, timeout=30)
        with pytest.MonkeyPatch.context() as monkeypatch:
            _aws_env(monkeypatch)
            _s3_client(endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()


def _s3_client(endpoint: str):
    return boto3.session.Session().client("s3", endpoint_url=endpoint)


@pytest.fixture(params=["local", "s3"])
def artifacts(request, tmp_path, monkeypatch) -> ArtifactStore:
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "artifacts")
    endpoint = request.getfixturevalue("s3_endpoint")
    _aws_env(monkeypatch)
    # A prefix per test keeps tests apart in the shared bucket.
    return S3ArtifactStore(BUCKET, f"p-{uuid.uuid4().hex[:8]}/nested", endpoint_url=endpoint)


# --- round trips --------------------------------------------------------------------------


async def test_put_then_get_round_trips_bytes_size_and_checksum(artifacts):
    data = os.urandom(200_000)
    stored = await artifacts.put(*RUN, "models/model.pkl", data)

    assert stored.path == "models/model.pkl"
    assert stored.size_bytes == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.uri == artifacts.item_uri(*RUN) + "/models/model.pkl"
    assert await artifacts.get(*RUN, "models/model.pkl") == data


async def test_empty_file_round_trips(artifacts):
    stored = await artifacts.put(*RUN, "empty", b"")
    assert (stored.size_bytes, stored.sha256) == (0, hashlib.sha256(b"").hexdigest())
    assert await artifacts.get(*RUN, "empty") == b""


async def test_put_overwrites_an_existing_file(artifacts):
    await artifacts.put(*RUN, "notes.txt", b"first version")
    stored = await artifacts.put(*RUN, "notes.txt", b"second")

    assert stored.size_bytes == 6
    assert await artifacts.get(*RUN, "notes.txt") == b"second"
    assert await artifacts.list(*RUN) == [ArtifactEntry("notes.txt", False, 6)]


async def test_listing_shows_one_level_sorted(artifacts):
    for key, data in [
        ("plots/loss.png", b"png"),
        ("models/model.pkl", b"12345"),
        ("models/conda/env.yaml", b"yaml"),
        ("a.txt", b"a"),
    ]:
        await artifacts.put(*RUN, key, data)

    assert await artifacts.list(*RUN) == [
        ArtifactEntry("a.txt", False, 1),
        ArtifactEntry("models", True, 0),
        ArtifactEntry("plots", True, 0),
    ]
    expected_models = [
        ArtifactEntry("models/conda", True, 0),
        ArtifactEntry("models/model.pkl", False, 5),
    ]
    assert await artifacts.list(*RUN, "models") == expected_models
    assert await artifacts.list(*RUN, "models/") == expected_models
    assert await artifacts.list(*RUN, "models/conda") == [
        ArtifactEntry("models/conda/env.yaml", False, 4)
    ]
    assert await artifacts.list(*RUN, "missing") == []
    assert await artifacts.list("acme", "exp-1", "other-run") == []


async def test_listing_paginates_past_a_thousand_keys(artifacts):
    # S3 answers at most 1000 keys a page; the store must follow continuation tokens.
    await asyncio.gather(*(artifacts.put(*RUN, f"many/{i:04d}", b"x") for i in range(1005)))
    entries = await artifacts.list(*RUN, "many")
    assert len(entries) == 1005
    assert entries[-1] == ArtifactEntry("many/1004", False, 1)


async def test_missing_paths_and_directories_are_not_found(artifacts):
    await artifacts.put(*RUN, "models/model.pkl", b"m")
    for path in ["nope.bin", "models", "models/model.pkl/x", ""]:
        with pytest.raises(NotFound) as caught:
            await artifacts.get(*RUN, path)
        assert caught.value.reason == "ARTIFACT_NOT_FOUND"
        assert caught.value.metadata == {"path": path}


async def test_same_run_id_under_two_tenants_is_two_separate_runs(artifacts):
    await artifacts.put("acme", "exp-1", "run-1", "model.bin", b"acme's model")
    await artifacts.put("globex", "exp-1", "run-1", "secret.bin", b"globex's secret")
    await artifacts.put("globex", "exp-1", "run-1", "model.bin", b"globex's model")

    assert await artifacts.get("acme", "exp-1", "run-1", "model.bin") == b"acme's model"
    assert await artifacts.get("globex", "exp-1", "run-1", "model.bin") == b"globex's model"
    assert await artifacts.list("acme", "exp-1", "run-1") == [ArtifactEntry("model.bin", False, 12)]
    with pytest.raises(NotFound):
        await artifacts.get("acme", "exp-1", "run-1", "secret.bin")
    assert artifacts.item_uri("acme", "exp-1", "run-1") != artifacts.item_uri(
        "globex", "exp-1", "run-1"
    )


# --- path rules ---------------------------------------------------------------------------

EVIL_PATHS = [
    "../x",
    "a/../../x",
    "a/..",
    "..",
    "/etc/passwd",
    "//etc/passwd",
    "a\\b",
    "..\\..\\x",
    "a/./b",
    ".",
    "./a",
    "x\x00y",
    "a\nb",
    "tab\there",
    "x" * 1025,
    "/".join(["abcdefghij"] * 100),
    "y" * 256,
    ".mlmesh-tmp-abc",
]


@pytest.mark.parametrize("path", EVIL_PATHS, ids=range(len(EVIL_PATHS)))
def test_check_relative_path_refuses_escapes_and_ambiguity(path):
    with pytest.raises(InvalidArgument) as caught:
        check_relative_path(path)
    assert caught.value.reason == "INVALID_ARTIFACT_PATH"


@pytest.mark.parametrize(
    ("directory", "filename"),
    [
        ("", ""),
        ("dir", ""),
        ("", ".."),
        ("", "."),
        ("a", "b/c"),
        ("a", "../x"),
        ("../up", "f"),
        ("/abs", "f"),
        ("a\\b", "f"),
        ("a/./b", "f"),
        ("", "x\x00y"),
        ("d" * 1020, "file"),
    ],
)
def test_artifact_key_refuses_escapes_and_ambiguity(directory, filename):
    with pytest.raises(InvalidArgument) as caught:
        artifact_key(directory, filename)
    assert caught.value.reason == "INVALID_ARTIFACT_PATH"


@pytest.mark.parametrize(
    ("directory", "filename", "key"),
    [
        ("", "m.bin", "m.bin"),
        ("models", "m.bin", "models/m.bin"),
        ("models/", "m.bin", "models/m.bin"),
        ("a//b", "m.bin", "a/b/m.bin"),
        # Percent-escapes are names, not traversal: nothing decodes them later.
        ("%2e%2e", "%2e%2e", "%2e%2e/%2e%2e"),
        ("...", "..m", ".../..m"),
        ("données", "ü.bin", "données/ü.bin"),
    ],
)
def test_artifact_key_normalises_safe_paths(directory, filename, key):
    assert artifact_key(directory, filename) == key


def test_empty_path_is_the_root():
    assert check_relative_path("") == ""
    assert check_relative_path("a/b/") == "a/b"


@given(st.text(alphabet=st.sampled_from("./\\a%\x00"), max_size=12))
def test_any_accepted_path_stays_inside_the_run(path):
    root = Path("/srv/run")
    try:
        key = check_relative_path(path)
    except InvalidArgument:
        return
    assert not key.startswith("/")
    if key:
        assert all(segment not in ("", ".", "..") for segment in key.split("/"))
    assert os.path.normpath(root / key).startswith(str(root))


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../x", "a\\b", ""])
async def test_stores_refuse_evil_keys_before_touching_storage(artifacts, path):
    with pytest.raises(InvalidArgument) as caught:
        await artifacts.put(*RUN, path, b"evil")
    assert caught.value.reason == "INVALID_ARTIFACT_PATH"
    if path:
        with pytest.raises(InvalidArgument):
            await artifacts.get(*RUN, path)
        with pytest.raises(InvalidArgument):
            await artifacts.list(*RUN, path)
    assert await artifacts.list(*RUN) == []


UNSAFE_IDS = ["", ".", "..", "a/b", "-x", ".hidden", "a b", "x" * 129, "t\x00", "ä", "a\n"]


@pytest.mark.parametrize("bad", UNSAFE_IDS, ids=range(len(UNSAFE_IDS)))
async def test_unsafe_tenant_experiment_and_run_ids_are_refused(artifacts, bad):
    for ids in [(bad, "exp-1", "run-1"), ("acme", bad, "run-1"), ("acme", "exp-1", bad)]:
        with pytest.raises(InvalidArgument):
            artifacts.item_uri(*ids)
        with pytest.raises(InvalidArgument):
            await artifacts.put(*ids, "f", b"x")
        with pytest.raises(InvalidArgument):
            await artifacts.list(*ids)


# --- backend specifics --------------------------------------------------------------------


async def test_local_write_leaves_no_temporary_files(tmp_path):
    store = LocalArtifactStore(tmp_path)
    stored = await store.put(*RUN, "d/f.bin", b"data")
    assert sorted(p.name for p in (tmp_path / "acme/exp-1/run-1/d").iterdir()) == ["f.bin"]
    assert stored.uri == (tmp_path / "acme/exp-1/run-1/d/f.bin").resolve().as_uri()


async def test_local_file_and_directory_of_the_same_name_clash(tmp_path):
    store = LocalArtifactStore(tmp_path)
    await store.put(*RUN, "a", b"file")
    with pytest.raises(FailedPrecondition) as caught:
        await store.put(*RUN, "a/b", b"under a file")
    assert caught.value.reason == "ARTIFACT_PATH_CONFLICT"
    await store.put(*RUN, "d/x", b"x")
    with pytest.raises(FailedPrecondition):
        await store.put(*RUN, "d", b"over a directory")


async def test_s3_object_carries_its_checksum_and_prefix(s3_endpoint, monkeypatch):
    _aws_env(monkeypatch)
    store = S3ArtifactStore(BUCKET, "/team/runs/", endpoint_url=s3_endpoint)
    stored = await store.put(*RUN, "m.bin", b"model")

    assert stored.uri == f"s3://{BUCKET}/team/runs/acme/exp-1/run-1/m.bin"
    head = _s3_client(s3_endpoint).head_object(
        Bucket=BUCKET, Key="team/runs/acme/exp-1/run-1/m.bin"
    )
    assert head["Metadata"]["sha256"] == hashlib.sha256(b"model").hexdigest()


async def test_s3_missing_bucket_is_unavailable(s3_endpoint, monkeypatch):
    _aws_env(monkeypatch)
    store = S3ArtifactStore("no-such-bucket", endpoint_url=s3_endpoint)
    with pytest.raises(Unavailable) as caught:
        await store.put(*RUN, "f", b"x")
    assert caught.value.reason == "ARTIFACT_STORE_UNAVAILABLE"


async def test_s3_unreachable_endpoint_is_unavailable(monkeypatch):
    _aws_env(monkeypatch)
    config = Config(connect_timeout=1, read_timeout=1, retries={"total_max_attempts": 1})
    store = S3ArtifactStore(
        BUCKET, "p", endpoint_url=f"http://{LOOPBACK}:{free_port()}", config=config
    )
    for call in [
        store.put(*RUN, "f", b"x"),
        store.get(*RUN, "f"),
        store.list(*RUN),
    ]:
        with pytest.raises(Unavailable) as caught:
            await call
        assert caught.value.reason == "ARTIFACT_STORE_UNAVAILABLE"


# --- store URIs ---------------------------------------------------------------------------


def test_open_file_uri_with_absolute_path(tmp_path):
    store = open_artifact_store(tmp_path.resolve().as_uri())
    assert isinstance(store, LocalArtifactStore)
    assert store.root == tmp_path.resolve()
    assert store.item_uri(*RUN) == (tmp_path.resolve() / "acme/exp-1/run-1").as_uri()


def test_open_relative_file_uri_and_plain_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = open_artifact_store("file://.mlmesh/artifacts")
    assert isinstance(store, LocalArtifactStore)
    assert store.root == tmp_path.resolve() / ".mlmesh/artifacts"

    plain = open_artifact_store("data/artifacts")
    assert isinstance(plain, LocalArtifactStore)
    assert plain.root == tmp_path.resolve() / "data/artifacts"


def test_open_s3_uri(monkeypatch):
    _aws_env(monkeypatch)
    store = open_artifact_store("s3://models-bucket/some/prefix/")
    assert isinstance(store, S3ArtifactStore)
    assert (store.bucket, store.prefix) == ("models-bucket", "some/prefix")
    assert store.item_uri(*RUN) == "s3://models-bucket/some/prefix/acme/exp-1/run-1"

    bare = open_artifact_store("s3://models-bucket")
    assert bare.item_uri(*RUN) == "s3://models-bucket/acme/exp-1/run-1"


@pytest.mark.parametrize(
    "uri", ["", "ftp://host/x", "http://host/x", "gs://b/p", "s3://", "file://"]
)
def test_open_refuses_unknown_or_incomplete_uris(uri):
    with pytest.raises(ValueError, match="artifact store URI"):
        open_artifact_store(uri)


# --- uploads ------------------------------------------------------------------------------


def _multipart(files: dict, data: dict | None = None) -> tuple[str, bytes]:
    prepared = requests.Request("POST", "http://x", files=files, data=data).prepare()
    return prepared.headers["Content-Type"], prepared.body


def test_multipart_upload_takes_the_file_part():
    # Bytes that look like multipart framing must come back untouched.
    data = os.urandom(50_000) + b"\r\n--boundary\r\n\r\n--"
    content_type, body = _multipart({"file": ("m.bin", data)}, data={"note": "hello"})

    assert parse_upload(content_type, body, "models") == ("models/m.bin", data)
    assert parse_upload(content_type, body, "") == ("m.bin", data)


def test_multipart_upload_keeps_a_utf8_filename():
    content_type, body = _multipart({"file": ("modèle.bin", b"x")})
    assert parse_upload(content_type, body, "d") == ("d/modèle.bin", b"x")


@pytest.mark.parametrize(
    "files",
    [
        {"other": ("m.bin", b"x")},
        {"file": (None, b"no filename")},
        {"file": ("", b"empty filename")},
    ],
)
def test_multipart_upload_without_a_named_file_is_refused(files):
    content_type, body = _multipart(files)
    with pytest.raises(InvalidArgument) as caught:
        parse_upload(content_type, body, "models")
    assert caught.value.reason == "INVALID_UPLOAD"


def test_malformed_multipart_is_refused():
    content_type, body = _multipart({"file": ("m.bin", b"0123456789")})
    for bad_type, bad_body in [
        (content_type, body[: len(body) // 2]),
        (content_type, b"garbage without any boundary"),
        ("multipart/form-data", body),
        ("multipart/form-data; boundary=other", body),
    ]:
        with pytest.raises(InvalidArgument) as caught:
            parse_upload(bad_type, bad_body, "")
        assert caught.value.reason == "INVALID_UPLOAD"


def test_multipart_filename_cannot_escape():
    content_type, body = _multipart({"file": ("../../etc/passwd", b"x")})
    with pytest.raises(InvalidArgument) as caught:
        parse_upload(content_type, body, "")
    assert caught.value.reason == "INVALID_ARTIFACT_PATH"


def test_raw_upload_names_the_file_with_artifact_path():
    data = os.urandom(1000)
    assert parse_upload("application/octet-stream", data, "models/m.bin") == (
        "models/m.bin",
        data,
    )
    assert parse_upload("", data, "m.bin") == ("m.bin", data)


@pytest.mark.parametrize("artifact_path", ["", "models/"])
def test_raw_upload_without_a_file_name_is_refused(artifact_path):
    with pytest.raises(InvalidArgument) as caught:
        parse_upload("application/octet-stream", b"data", artifact_path)
    assert caught.value.reason == "INVALID_UPLOAD"


def test_raw_upload_path_cannot_escape():
    with pytest.raises(InvalidArgument) as caught:
        parse_upload("application/octet-stream", b"x", "../m.bin")
    assert caught.value.reason == "INVALID_ARTIFACT_PATH"
