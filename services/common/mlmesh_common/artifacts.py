"""Artifact storage on a local directory or S3 (run artifacts, datasets, fitted models), with the
path rules that keep every file inside its owner's prefix, and the parsing of upload bodies."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import hashlib
import os
import re
import tempfile
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.config
from botocore.exceptions import BotoCoreError, ClientError
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from mlmesh_common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable

# S3 refuses keys over 1024 bytes; the same limit keeps both backends interchangeable.
MAX_KEY_BYTES = 1024
# Most file systems refuse longer names; refusing them up front gives a clean 400 instead.
MAX_SEGMENT_BYTES = 255
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# In-flight local writes use this prefix; user paths may not, so listings can hide them.
_TMP_PREFIX = ".mlmesh-tmp-"
_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}


@dataclass(frozen=True)
class StoredArtifact:
    path: str
    size_bytes: int
    sha256: str
    uri: str


@dataclass(frozen=True)
class ArtifactEntry:
    path: str
    is_dir: bool
    size_bytes: int


def _bad_path(path: str, why: str) -> InvalidArgument:
    return InvalidArgument(
        f"invalid artifact path {path!r}: {why}",
        reason="INVALID_ARTIFACT_PATH",
        metadata={"path": path[:200]},
    )


def check_relative_path(path: str) -> str:
    """The normalised POSIX form of a path inside a run; "" (the run's root) is allowed.

    Repeated and trailing slashes collapse; anything that could leave the run or name two
    things at once is refused. Percent-escapes are not decoded: "%2e%2e" is a plain name.
    """
    if len(path.encode("utf-8")) > MAX_KEY_BYTES:
        raise _bad_path(path, f"longer than {MAX_KEY_BYTES} bytes")
    if path.startswith("/"):
        raise _bad_path(path, "absolute paths are not allowed")
    if "\\" in path:
        raise _bad_path(path, "backslashes are not allowed")
    if _CONTROL.search(path):
        raise _bad_path(path, "control characters are not allowed")
    segments = [segment for segment in path.split("/") if segment]
    for segment in segments:
        if segment in (".", ".."):
            raise _bad_path(path, f"{segment!r} segments are not allowed")
        if segment.startswith(_TMP_PREFIX):
            raise _bad_path(path, f"names starting with {_TMP_PREFIX!r} are reserved")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise _bad_path(path, f"a name is longer than {MAX_SEGMENT_BYTES} bytes")
    return "/".join(segments)


def artifact_key(artifact_path: str, filename: str) -> str:
    """The run-relative key of `filename` in the optional directory `artifact_path`."""
    if not filename:
        raise _bad_path(filename, "the file name is empty")
    if "/" in filename:
        raise _bad_path(filename, "the file name must not contain '/'")
    directory = check_relative_path(artifact_path)
    return check_relative_path(f"{directory}/{filename}" if directory else filename)


def _check_id(kind: str, value: str) -> str:
    # Ids become single path segments / key parts, so they must not carry separators or dots.
    if not _SAFE_ID.fullmatch(value) or value == "..":
        raise InvalidArgument(
            f"invalid {kind} {value[:200]!r} for artifact storage",
            reason="INVALID_ARGUMENT",
            metadata={"field": kind},
        )
    return value


class ArtifactStore(abc.ABC):
    """Files of items (a run, a dataset, a model), kept apart per tenant under
    `<base>/<tenant>/<group>/<item>`: for a run, group is its experiment id and item its id.

    The public methods validate every id and path; the backends only see safe relative keys
    and do their blocking I/O on a worker thread.
    """

    def item_uri(self, tenant: str, group: str, item: str) -> str:
        return self._uri(self._parts(tenant, group, item), "")

    async def put(
        self, tenant: str, group: str, item: str, key: str, data: bytes
    ) -> StoredArtifact:
        """Stores `data` at `key` (replacing any earlier file there)."""
        run = self._parts(tenant, group, item)
        key = check_relative_path(key)
        if not key:
            raise _bad_path(key, "the path names the run's root, not a file")
        sha256 = hashlib.sha256(data).hexdigest()
        await asyncio.to_thread(self._write, run, key, data, sha256)
        return StoredArtifact(key, len(data), sha256, self._uri(run, key))

    async def list(self, tenant: str, group: str, item: str, path: str = "") -> list[ArtifactEntry]:
        """Files and sub-directories directly under `path`, sorted; [] when there are none."""
        run = self._parts(tenant, group, item)
        path = check_relative_path(path)
        entries = await asyncio.to_thread(self._list, run, path)
        return sorted(entries, key=lambda entry: entry.path)

    async def get(self, tenant: str, group: str, item: str, path: str) -> bytes:
        run = self._parts(tenant, group, item)
        key = check_relative_path(path)
        data = await asyncio.to_thread(self._read, run, key) if key else None
        if data is None:
            raise NotFound(
                f"artifact {path!r} not found", reason="ARTIFACT_NOT_FOUND", metadata={"path": path}
            )
        return data

    @staticmethod
    def _parts(tenant: str, group: str, item: str) -> tuple[str, str, str]:
        return (_check_id("tenant", tenant), _check_id("group", group), _check_id("item", item))

    @abc.abstractmethod
    def _uri(self, run: tuple[str, str, str], key: str) -> str:
        """The URI of `key` in the run ("" for the run's root)."""

    @abc.abstractmethod
    def _write(self, run: tuple[str, str, str], key: str, data: bytes, sha256: str) -> None: ...

    @abc.abstractmethod
    def _list(self, run: tuple[str, str, str], path: str) -> list[ArtifactEntry]: ...

    @abc.abstractmethod
    def _read(self, run: tuple[str, str, str], key: str) -> bytes | None:
        """The file's bytes, or None when no file has that key."""


class LocalArtifactStore(ArtifactStore):
    def __init__(self, root: Path | str) -> None:
        # Absolute now, so a later chdir cannot move the store.
        self.root = Path(root).resolve()

    def _path(self, run: tuple[str, str, str], key: str) -> Path:
        path = self.root.joinpath(*run)
        return path.joinpath(*key.split("/")) if key else path

    def _uri(self, run: tuple[str, str, str], key: str) -> str:
        return self._path(run, key).as_uri()

    def _write(self, run: tuple[str, str, str], key: str, data: bytes, sha256: str) -> None:
        target = self._path(run, key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # Readers see either the old file or the new one, never a partial write.
            fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=target.parent)
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except (FileExistsError, NotADirectoryError, IsADirectoryError) as error:
            raise FailedPrecondition(
                f"artifact {key!r} clashes with an existing file or directory",
                reason="ARTIFACT_PATH_CONFLICT",
                metadata={"path": key},
            ) from error
        except OSError as error:
            raise Unavailable(
                f"cannot write artifact {key!r}: {error.strerror}",
                reason="ARTIFACT_STORE_UNAVAILABLE",
            ) from error

    def _list(self, run: tuple[str, str, str], path: str) -> list[ArtifactEntry]:
        directory = self._path(run, path)
        try:
            with os.scandir(directory) as entries:
                found = []
                for entry in entries:
                    if entry.name.startswith(_TMP_PREFIX):
                        continue
                    relative = f"{path}/{entry.name}" if path else entry.name
                    if entry.is_dir(follow_symlinks=False):
                        found.append(ArtifactEntry(relative, True, 0))
                    elif entry.is_file(follow_symlinks=False):
                        size = entry.stat(follow_symlinks=False).st_size
                        found.append(ArtifactEntry(relative, False, size))
                return found
        except (FileNotFoundError, NotADirectoryError):
            # Like MLflow: a missing directory (or a file) lists as empty.
            return []

    def _read(self, run: tuple[str, str, str], key: str) -> bytes | None:
        try:
            return self._path(run, key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None


class S3ArtifactStore(ArtifactStore):
    """Objects under `s3://bucket/prefix/`. Credentials, region and `AWS_ENDPOINT_URL` come from
    boto3's usual environment and config files."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        client: Any = None,
        config: botocore.config.Config | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        # boto3 clients are thread-safe; sessions are not, so each store makes its own.
        self._client = client or boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, config=config
        )

    def _key(self, run: tuple[str, str, str], key: str) -> str:
        return "/".join(part for part in (self.prefix, *run, key) if part)

    def _uri(self, run: tuple[str, str, str], key: str) -> str:
        return f"s3://{self.bucket}/{self._key(run, key)}"

    def _write(self, run: tuple[str, str, str], key: str, data: bytes, sha256: str) -> None:
        with _s3_errors():
            self._client.put_object(
                Bucket=self.bucket, Key=self._key(run, key), Body=data, Metadata={"sha256": sha256}
            )

    def _list(self, run: tuple[str, str, str], path: str) -> list[ArtifactEntry]:
        prefix = self._key(run, path) + "/"
        found = []
        with _s3_errors():
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, Delimiter="/"
            )
            for page in pages:
                for common in page.get("CommonPrefixes", []):
                    name = common["Prefix"][len(prefix) :].rstrip("/")
                    found.append(ArtifactEntry(_join(path, name), True, 0))
                for item in page.get("Contents", []):
                    name = item["Key"][len(prefix) :]
                    # A key equal to the prefix is a "folder" marker some tools create.
                    if name:
                        found.append(ArtifactEntry(_join(path, name), False, item["Size"]))
        return found

    def _read(self, run: tuple[str, str, str], key: str) -> bytes | None:
        with _s3_errors():
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=self._key(run, key))
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in _NOT_FOUND_CODES:
                    return None
                raise
            return response["Body"].read()


def _join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory else name


@contextlib.contextmanager
def _s3_errors() -> Iterator[None]:
    """Turns boto failures into Unavailable: the store, not the caller's request, is at fault."""
    try:
        yield
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "unknown")
        raise Unavailable(
            f"artifact store refused the request ({code})", reason="ARTIFACT_STORE_UNAVAILABLE"
        ) from error
    except BotoCoreError as error:
        raise Unavailable(
            f"artifact store cannot be reached: {error}", reason="ARTIFACT_STORE_UNAVAILABLE"
        ) from error


def open_artifact_store(uri: str) -> ArtifactStore:
    """The store for `file:///abs`, `file://relative/dir`, a plain path, or `s3://bucket/prefix`."""
    parts = urllib.parse.urlsplit(uri)
    if not uri:
        raise ValueError("artifact store URI is empty")
    if parts.scheme == "":
        return LocalArtifactStore(Path(uri))
    if parts.scheme == "file":
        # `file://.mlmesh/artifacts` is a relative directory: the "host" is its first part.
        path = urllib.parse.unquote(parts.netloc + parts.path)
        if not path:
            raise ValueError(f"artifact store URI {uri!r} names no directory")
        return LocalArtifactStore(Path(path))
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError(f"artifact store URI {uri!r} names no bucket (s3://bucket/prefix)")
        return S3ArtifactStore(parts.netloc, parts.path.strip("/"))
    raise ValueError(
        f"unsupported artifact store URI {uri!r}: use file:///abs/dir, file://relative/dir, "
        "a plain path, or s3://bucket/prefix"
    )


def _bad_upload(message: str) -> InvalidArgument:
    return InvalidArgument(message, reason="INVALID_UPLOAD")


def parse_upload(content_type: str, body: bytes, artifact_path: str) -> tuple[str, bytes]:
    """The run-relative key and the bytes of an uploaded file.

    multipart/form-data: the part named `file` is the file and `artifact_path` its directory.
    Any other content type: the body is the file and `artifact_path` names the file itself.
    """
    media_type, options = parse_options_header(content_type)
    if media_type != b"multipart/form-data":
        directory, _, filename = check_relative_path(artifact_path).rpartition("/")
        # "dir/" names a directory; storing the body as a file called "dir" would surprise.
        if not filename or artifact_path.endswith("/"):
            raise _bad_upload("a raw upload needs artifact_path naming the file, e.g. dir/f.bin")
        return artifact_key(directory, filename), body
    boundary = options.get(b"boundary")
    if not boundary:
        raise _bad_upload("multipart/form-data without a boundary")
    filename, data = _file_part(boundary, body)
    return artifact_key(artifact_path, filename), data


def _file_part(boundary: bytes, body: bytes) -> tuple[str, bytes]:
    """The filename and bytes of the single part named `file`."""
    parts: list[tuple[dict[bytes, bytes], bytearray]] = []
    header: list[bytearray] = [bytearray(), bytearray()]
    ended: list[bool] = []

    def on_part_begin() -> None:
        parts.append(({}, bytearray()))

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]

    def on_header_end() -> None:
        parts[-1][0][bytes(header[0]).lower()] = bytes(header[1])
        header[0], header[1] = bytearray(), bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1][1].extend(data[start:end])

    callbacks: Any = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
        "on_end": lambda: ended.append(True),
    }
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except FormParserError as error:
        raise _bad_upload(f"malformed multipart body: {error}") from error
    # The parser accepts a truncated body silently; only a closing boundary proves it whole.
    if not ended:
        raise _bad_upload("malformed multipart body: no closing boundary")

    files = []
    for headers, data in parts:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        if disposition.get(b"name") == b"file":
            files.append((disposition.get(b"filename"), bytes(data)))
    if len(files) != 1:
        raise _bad_upload(f"expected exactly one part named 'file', found {len(files)}")
    raw_name, data = files[0]
    if not raw_name:
        raise _bad_upload("the 'file' part has no filename")
    try:
        filename = raw_name.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _bad_upload("the file name is not UTF-8") from error
    return filename, data
