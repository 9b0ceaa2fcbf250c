"""A throwaway PostgreSQL cluster on loopback for tests: initdb, pg_ctl start, databases, URLs."""

from __future__ import annotations

import atexit
import itertools
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from tests.helpers.net import LOOPBACK, free_port

PG_BIN_ENV = "MLMESH_PG_BIN"
DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"
# initdb refuses root, so as root every server command runs as this OS user.
OS_USER = "postgres"
# A free port can be taken between picking and binding; retry with a new one.
START_ATTEMPTS = 3
START_TIMEOUT_S = 60

_DRIVER_SCHEMES = {
    "asyncpg": "postgresql+asyncpg",
    "psycopg2": "postgresql+psycopg2",
    "psycopg": "postgresql+psycopg",
}
_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_pg_bin() -> Path:
    """`$MLMESH_PG_BIN`, else the highest-version `/usr/lib/postgresql/*/bin` with initdb."""
    override = os.environ.get(PG_BIN_ENV)
    if override:
        bin_dir = Path(override)
        if not (bin_dir / "initdb").is_file():
            raise PostgresUnavailable(f"{PG_BIN_ENV}={override} has no initdb")
        return bin_dir
    candidates = [initdb.parent for initdb in DEBIAN_PG_ROOT.glob("*/bin/initdb")]
    if not candidates:
        raise PostgresUnavailable(
            f"no PostgreSQL server binaries under {DEBIAN_PG_ROOT}/*/bin; "
            "run tools/ensure_postgres.sh (or set MLMESH_PG_BIN)"
        )
    return max(candidates, key=lambda bin_dir: _version_key(bin_dir.parent.name))


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else -1 for part in version.split("."))


@dataclass(frozen=True)
class DatabaseInfo:
    """Where one database lives; trust auth, so no password."""

    host: str
    port: int
    user: str
    dbname: str

    @property
    def dsn(self) -> str:
        """libpq keyword/value form, for psycopg2.connect and asyncpg.connect."""
        return f"host={self.host} port={self.port} user={self.user} dbname={self.dbname}"

    def url(self, driver: str) -> str:
        """SQLAlchemy URL with an explicit driver: `asyncpg`, `psycopg2` or `psycopg`.

        The driver is required because SQLAlchemy 2.1 maps a bare `postgresql://` to psycopg 3.
        """
        try:
            scheme = _DRIVER_SCHEMES[driver]
        except KeyError:
            raise ValueError(
                f"unknown driver {driver!r}; use one of {sorted(_DRIVER_SCHEMES)}"
            ) from None
        return f"{scheme}://{self.user}@{self.host}:{self.port}/{self.dbname}"

    @property
    def libpq_url(self) -> str:
        """`postgresql://` URL for libpq-based clients (asyncpg.connect, psql)."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}"


class PostgresCluster:
    """One PostgreSQL server in a temporary directory, on 127.0.0.1 at a free port.

    Tuned for tests, not durability: fsync, synchronous_commit and full_page_writes are off.
    Use as a context manager, or call start() and stop().
    """

    def __init__(self, bin_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir or find_pg_bin()
        self.host = LOOPBACK
        self.port: int | None = None
        self._root: Path | None = None
        self._run_as = _server_os_user()
        self._database_names = (f"test_{n}" for n in itertools.count(1))

    @property
    def data_dir(self) -> Path:
        return self._require_root() / "data"

    @property
    def log_file(self) -> Path:
        return self._require_root() / "server.log"

    def start(self) -> Self:
        if self._root is not None:
            raise RuntimeError("cluster already started")
        self._root = Path(tempfile.mkdtemp(prefix="mlmesh-pg-"))
        atexit.register(self.stop)
        try:
            self._prepare_root()
            self._initdb()
            self._start_server()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Immediate shutdown (no checkpoint: the data is thrown away) and remove the files."""
        atexit.unregister(self.stop)
        root, self._root = self._root, None
        if root is None:
            return
        if (root / "data" / "postmaster.pid").exists():
            subprocess.run(
                self._as_server_user(
                    [
                        self._tool("pg_ctl"),
                        "stop",
                        "-D",
                        str(root / "data"),
                        "-m",
                        "immediate",
                    ]
                ),
                capture_output=True,
                timeout=START_TIMEOUT_S,
                check=False,
            )
        shutil.rmtree(root, ignore_errors=True)
        self.port = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def database(self, name: str = SUPERUSER) -> DatabaseInfo:
        """Connection details of a database on this cluster (it must exist)."""
        if self.port is None:
            raise RuntimeError("cluster not started")
        return DatabaseInfo(host=self.host, port=self.port, user=SUPERUSER, dbname=name)

    def url(self, db: str, driver: str) -> str:
        """SQLAlchemy URL for database `db`; `driver` is `asyncpg`, `psycopg2` or `psycopg`."""
        return self.database(db).url(driver)

    def create_database(self, name: str | None = None) -> DatabaseInfo:
        """A new empty database; a unique name is generated when none is given."""
        name = name or next(self._database_names)
        self._execute_admin(f'CREATE DATABASE "{_checked_name(name)}"')
        return self.database(name)

    def drop_database(self, name: str) -> None:
        """Drops `name`, disconnecting anyone still connected to it."""
        self._execute_admin(f'DROP DATABASE IF EXISTS "{_checked_name(name)}" WITH (FORCE)')

    def _execute_admin(self, statement: str) -> None:
        import psycopg2

        # CREATE/DROP DATABASE cannot run inside a transaction block.
        connection = psycopg2.connect(self.database().dsn)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(statement)
        finally:
            connection.close()

    def _prepare_root(self) -> None:
        root = self._require_root()
        # postgres must reach the data dir and the socket dir inside the temporary directory.
        root.chmod(0o700)
        if self._run_as is not None:
            os.chown(root, self._run_as.pw_uid, self._run_as.pw_gid)

    def _initdb(self) -> None:
        self._run(
            [
                self._tool("initdb"),
                "--pgdata",
                str(self.data_dir),
                "--username",
                SUPERUSER,
                "--auth-local",
                "trust",
                "--auth-host",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                # The cluster is discarded after the run; skipping fsync saves ~1 s.
                "--no-sync",
            ],
            what="initdb",
        )

    def stop_server(self, mode: str = "fast") -> None:
        """Stops the server but keeps its data (a fault to inject): `fast` disconnects every
        client at once, `immediate` is a crash. `start_server` brings it back on its port."""
        self._run(
            [self._tool("pg_ctl"), "stop", "--pgdata", str(self.data_dir), "-m", mode, "--wait"],
            what="pg_ctl stop",
        )

    def start_server(self) -> None:
        """Starts the server stopped by `stop_server`, on the same port."""
        if self.port is None:
            raise RuntimeError("cluster not started")
        self._pg_ctl_start(self.port)

    def _start_server(self) -> None:
        last_error: RuntimeError | None = None
        for _ in range(START_ATTEMPTS):
            port = free_port(self.host)
            try:
                self._pg_ctl_start(port)
            except RuntimeError as error:
                last_error = error
                continue
            self.port = port
            return
        raise last_error or RuntimeError("pg_ctl start failed")

    def _pg_ctl_start(self, port: int) -> None:
        server_options = " ".join(
            [
                f"-c listen_addresses={self.host}",
                f"-c port={port}",
                f"-c unix_socket_directories={self._require_root()}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                # Services, MLflow and tests each hold connection pools concurrently.
                "-c max_connections=300",
            ]
        )
        self._run(
            [
                self._tool("pg_ctl"),
                "start",
                "--pgdata",
                str(self.data_dir),
                "--log",
                str(self.log_file),
                "--wait",
                "--timeout",
                str(START_TIMEOUT_S),
                "-o",
                server_options,
            ],
            what="pg_ctl start",
        )

    def _run(self, command: list[str], *, what: str) -> None:
        result = subprocess.run(
            self._as_server_user(command),
            capture_output=True,
            text=True,
            # A cwd postgres can read: the caller's may be root-only.
            cwd=self._require_root(),
            timeout=START_TIMEOUT_S + 30,
            check=False,
        )
        if result.returncode != 0:
            log_tail = _tail(self.log_file) if self._root is not None else ""
            raise RuntimeError(
                f"{what} failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
                f"{log_tail}"
            )

    def _as_server_user(self, command: list[str]) -> list[str]:
        if self._run_as is None:
            return command
        return ["runuser", "-u", self._run_as.pw_name, "--", *command]

    def _tool(self, name: str) -> str:
        return str(self.bin_dir / name)

    def _require_root(self) -> Path:
        if self._root is None:
            raise RuntimeError("cluster not started")
        return self._root


def _server_os_user() -> pwd.struct_passwd | None:
    """The OS user to run the server as: `postgres` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(OS_USER)
    except KeyError:
        raise PostgresUnavailable(
            f"running as root but there is no {OS_USER!r} OS user; run tools/ensure_postgres.sh"
        ) from None


def _checked_name(name: str) -> str:
    if not _DATABASE_NAME.match(name):
        raise ValueError(f"database name {name!r} must match {_DATABASE_NAME.pattern}")
    return name


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n--- server log (tail) ---\n" + "\n".join(text.splitlines()[-lines:])


def backend_url(request, backend: str, directory: Path, name: str) -> str:
    """A new, empty database for a store test parametrized over backends: a SQLite file in
    `directory`, or a PostgreSQL database on the session's cluster (the `postgres` fixture)."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{directory / f'{name}.db'}"
    postgres = request.getfixturevalue("postgres")
    return postgres.create_database(f"{name}_{uuid.uuid4().hex[:8]}").url("asyncpg")
