"""Database plumbing shared by the services that own tables: async engines for PostgreSQL
(asyncpg) and SQLite (aiosqlite), and Alembic migrations run on such an engine."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import MetaData, event, exc, inspect, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from mlmesh_common.errors import DomainError, ResourceExhausted, Unavailable

# Advisory lock key taken while migrating ("mlmesh" in ASCII).
_LOCK = 0x6D6C6D657368


# A new PostgreSQL connection must be made within this, or the call fails UNAVAILABLE.
CONNECT_TIMEOUT_S = 5.0
# How long a call waits for a pooled connection before it is refused RESOURCE_EXHAUSTED.
POOL_TIMEOUT_S = 5.0
# The retry hint of a call refused because a pool stayed full, and of one the database is down for.
RETRY_AFTER_S = 1.0


def create_engine(
    url: str, pool_size: int = 10, pool_timeout_s: float = POOL_TIMEOUT_S
) -> AsyncEngine:
    """An engine for `url`. SQLite gets one connection (one writer at a time, never a "database
    is locked" error), foreign keys and WAL journaling."""
    if not url.startswith("sqlite"):
        # No pre-ping (a round trip per request); connections are recycled instead, and after a
        # database restart the first call that finds a dead connection invalidates the whole
        # pool (SQLAlchemy does it for its own statements, `driver_connection` for the driver's):
        # that call fails UNAVAILABLE, the next ones reconnect.
        return create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_recycle=1800,
            pool_timeout=pool_timeout_s,
            connect_args={"timeout": CONNECT_TIMEOUT_S},
        )
    engine = create_async_engine(
        url,
        pool_size=1,
        max_overflow=0,
        pool_timeout=pool_timeout_s,
        connect_args={"timeout": 30},
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def reader(engine: AsyncEngine) -> AsyncEngine:
    """The same pool in autocommit mode, for reads: no BEGIN and no ROLLBACK round trips."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def search_reader(engine: AsyncEngine) -> AsyncEngine:
    """For searches built from a caller's filter: on PostgreSQL, a second pool to the same
    database (half the size of `engine`'s) whose sessions plan every statement for its parameter
    values (`plan_cache_mode=force_custom_plan`), in autocommit mode. How selective a filter is
    depends on its values, which the generic plan a prepared statement settles on after five runs
    cannot see: measured on 5,000 runs, it hash-joins every match and sorts them, where the
    value-aware plan walks the runs in order and stops at the page's end (the generic plan cost
    about 1 ms more per search). Elsewhere, `reader(engine)`."""
    if engine.dialect.name != "postgresql":
        return reader(engine)
    size = max(2, engine.pool.size() // 2)
    searcher = create_async_engine(
        engine.url,
        pool_size=size,
        max_overflow=size,
        pool_recycle=1800,
        pool_timeout=engine.pool.timeout(),
        connect_args={
            "timeout": CONNECT_TIMEOUT_S,
            "server_settings": {"plan_cache_mode": "force_custom_plan"},
        },
    )
    return reader(searcher)


async def ping(engine: AsyncEngine) -> None:
    """One round trip to the database (a health probe); raises when it cannot be reached."""
    async with reader(engine).connect() as connection:
        await connection.execute(text("SELECT 1"))


@contextlib.asynccontextmanager
async def driver_connection(connection: AsyncConnection) -> AsyncIterator[Any]:
    """The driver's own connection under `connection` (asyncpg), for statements run on it
    directly. A failure that closed it invalidates the pool as SQLAlchemy does for its own
    statements: without that, the dead connection would go back to the pool and fail every
    later call ("connection is closed") until the process restarts."""
    pooled = await connection.get_raw_connection()
    try:
        yield pooled.driver_connection
    except Exception as error:
        sync = connection.sync_connection
        if sync is not None and sync.dialect.is_disconnect(error, pooled.dbapi_connection, None):
            # Every connection made before this one is as dead: replace them all, lazily.
            sync.engine.pool._invalidate(pooled, error)
            await connection.invalidate(error)
        elif _is_broken_protocol(error):
            # Seen when the server terminates the connection mid-call: this one is unusable.
            await connection.invalidate(error)
        raise


def _is_broken_protocol(error: BaseException) -> bool:
    try:
        import asyncpg
    except ImportError:  # pragma: no cover - asyncpg is installed with every SQL service
        return False
    return isinstance(error, asyncpg.exceptions.InternalClientError)


def _chain(error: BaseException) -> list[BaseException]:
    """`error`, the driver error SQLAlchemy wrapped, and their causes and contexts."""
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [error]
    while pending:
        item = pending.pop()
        if item is None or any(item is known for known in seen):
            continue
        seen.append(item)
        pending += [getattr(item, "orig", None), item.__cause__, item.__context__]
    return seen


def _is_connection_failure(error: BaseException) -> bool:
    # Refused, reset, timed out; asyncio reports a failed connect as a plain OSError. Its
    # subclasses about files (FileNotFoundError...) are not about the database.
    if isinstance(error, ConnectionError | TimeoutError) or type(error) is OSError:
        return True
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    try:
        import asyncpg
    except ImportError:  # pragma: no cover - asyncpg is installed with every SQL service
        return False
    if isinstance(
        error,
        asyncpg.ConnectionDoesNotExistError
        # 08xxx connection exceptions, 57xxx operator intervention (shutting down, starting up)
        | asyncpg.PostgresConnectionError
        | asyncpg.exceptions.OperatorInterventionError,
    ):
        return True
    return isinstance(error, asyncpg.InterfaceError) and "connection is closed" in str(error)


def database_error(error: BaseException) -> DomainError | None:
    """What a caller is told when a database call failed for reasons of the database rather
    than of the request: UNAVAILABLE while it cannot be reached, RESOURCE_EXHAUSTED when the
    pool stayed full past its timeout; None for any other error (a bug: INTERNAL)."""
    chain = _chain(error)
    if any(isinstance(item, exc.TimeoutError) for item in chain):
        return ResourceExhausted(
            "too many concurrent calls: no database connection was free in time; retry later",
            reason="DATABASE_POOL_EXHAUSTED",
            retry_after_s=RETRY_AFTER_S,
        )
    if any(_is_connection_failure(item) or _is_broken_protocol(item) for item in chain):
        return Unavailable(
            "the database cannot be reached; retry later",
            reason="DATABASE_UNAVAILABLE",
            retry_after_s=RETRY_AFTER_S,
        )
    return None


def alembic_config(script_location: Path) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    return config


DEFAULT_VERSION_TABLE = "alembic_version"


async def migrate(
    engine: AsyncEngine,
    script_location: Path,
    revision: str = "head",
    version_table: str = DEFAULT_VERSION_TABLE,
) -> None:
    """Upgrades the database behind `engine` to `revision` in one transaction. A service whose
    database holds another Alembic history (Optuna's) keeps its own `version_table`."""

    def upgrade(connection) -> None:
        config = alembic_config(script_location)
        config.attributes["connection"] = connection
        if version_table != DEFAULT_VERSION_TABLE:
            _adopt_version_table(connection, config, version_table)
        command.upgrade(config, revision)

    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Pods starting together on a new database migrate one at a time; the lock ends
            # with the transaction.
            await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK})
        await connection.run_sync(upgrade)


def _adopt_version_table(connection, config: Config, version_table: str) -> None:
    """Moves this service's revision out of the default `alembic_version` table, where
    databases created before it had its own table recorded it."""
    tables = set(inspect(connection).get_table_names())
    if version_table in tables or DEFAULT_VERSION_TABLE not in tables:
        return
    current = connection.execute(text(f"SELECT version_num FROM {DEFAULT_VERSION_TABLE}")).scalar()
    try:
        ours = current is not None and ScriptDirectory.from_config(config).get_revision(current)
    except CommandError:  # another history's revision (Optuna's): leave it alone
        ours = False
    if not ours:
        return
    connection.execute(
        text(f"CREATE TABLE {version_table} (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
    )
    connection.execute(text(f"INSERT INTO {version_table} VALUES (:v)"), {"v": current})
    connection.execute(text(f"DROP TABLE {DEFAULT_VERSION_TABLE}"))


def run_alembic_env(
    metadata: MetaData,
    default_url: Callable[[], str],
    version_table: str = DEFAULT_VERSION_TABLE,
) -> None:
    """The body of a service's Alembic `env.py`: migrate the connection that `migrate()` hands
    over, or, from the `alembic` command line, the database at `default_url()`."""
    from alembic import context

    def run(connection) -> None:
        # render_as_batch: SQLite can only ALTER tables by copying them.
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            version_table=version_table,
        )
        with context.begin_transaction():
            context.run_migrations()

    connection = context.config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return

    async def run_from_url() -> None:
        engine = create_async_engine(default_url())
        async with engine.begin() as connection:
            await connection.run_sync(run)
        await engine.dispose()

    asyncio.run(run_from_url())
