"""The training database holds two Alembic histories: the service's own (its version table
`mlmesh_training_alembic_version`) and Optuna's study tables (`alembic_version`)."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.exc import IntegrityError

from mlmesh_common.db import alembic_config, create_engine
from mlmesh_training.entities import Dataset
from mlmesh_training.storage.migrate import MIGRATIONS, VERSION_TABLE, migrate
from mlmesh_training.storage.sql import SqlTrainingStore
from mlmesh_training.tuning import open_storage, sync_url

HEAD = "0003"


def _tables_and_versions(url: str) -> tuple[set[str], dict[str, str]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            versions = {
                table: conn.execute(sa.text(f"SELECT version_num FROM {table}")).scalar()
                for table in (VERSION_TABLE, "alembic_version")
                if table in tables
            }
    finally:
        engine.dispose()
    return tables, versions


async def test_service_and_optuna_migrations_share_the_database(postgres):
    url = postgres.create_database("training_storage").url("asyncpg")
    engine = create_engine(url)
    await migrate(engine)
    storage = open_storage(sync_url(url))  # creates Optuna's tables and stamps its version
    await migrate(engine)  # a restart: the service's history is untouched by Optuna's
    await engine.dispose()
    storage.engine.dispose()
    tables, versions = _tables_and_versions(sync_url(url))
    assert {"models", "datasets", "tasks", "studies", "trials"} <= tables
    assert versions[VERSION_TABLE] == HEAD
    assert versions["alembic_version"] != HEAD  # Optuna's own revision


async def test_a_database_from_before_the_own_version_table_is_adopted(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'training.db'}"
    engine = create_engine(url)
    await migrate(engine)
    # As databases created before the service had its own version table recorded it.
    async with engine.begin() as conn:
        await conn.execute(sa.text(f"ALTER TABLE {VERSION_TABLE} RENAME TO alembic_version"))
    await migrate(engine)
    await engine.dispose()
    tables, versions = _tables_and_versions(sync_url(url))
    assert versions == {VERSION_TABLE: HEAD}
    assert "alembic_version" not in tables
    open_storage(sync_url(url)).engine.dispose()  # Optuna now finds the table free
    assert "studies" in _tables_and_versions(sync_url(url))[0]


def _dataset(tenant: str, symbol: str, kind: str = "bars", digest: str = "ab" * 32) -> Dataset:
    return Dataset(
        id=str(uuid.uuid4()),
        tenant=tenant,
        name=f"{symbol}-{kind}-1d",
        kind=kind,
        symbol=symbol,
        timeframe="1d",
        columns=["close"],
        row_count=3,
        start_date=0,
        end_date=2,
        version_hash=digest,
        storage_uri="file:///tmp/x",
        created_at=1,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'training.db'}"
    else:
        postgres = request.getfixturevalue("postgres")
        url = postgres.create_database(f"training_{uuid.uuid4().hex[:8]}").url("asyncpg")
    engine = create_engine(url)
    yield engine
    await engine.dispose()


async def test_one_content_under_other_metadata_is_another_dataset_after_0002(engine):
    await migrate(engine, "0001")
    async with engine.begin() as conn:  # revision 0001: one dataset per tenant and content
        await conn.execute(
            sa.text(
                "INSERT INTO datasets (id, tenant, name, kind, symbol, timeframe, columns,"
                " row_count, start_date, end_date, version_hash, storage_uri, created_at) VALUES"
                " (:id, 'acme', 'AAA-bars-1d', 'bars', 'AAA', '1d', '[]', 3, 0, 2, :digest,"
                " 'file:///x', 1)"
            ),
            {"id": str(uuid.uuid4()), "digest": "ab" * 32},
        )
        with pytest.raises(IntegrityError):
            async with conn.begin_nested():
                await conn.execute(
                    sa.text(
                        "INSERT INTO datasets (id, tenant, name, kind, symbol, timeframe, columns,"
                        " row_count, start_date, end_date, version_hash, storage_uri, created_at)"
                        " VALUES (:id, 'acme', 'BBB-bars-1d', 'bars', 'BBB', '1d', '[]', 3, 0, 2,"
                        " :digest, 'file:///x', 1)"
                    ),
                    {"id": str(uuid.uuid4()), "digest": "ab" * 32},
                )
    await migrate(engine)
    store = SqlTrainingStore(engine)
    first, created = await store.create_dataset(_dataset("acme", "BBB"))
    assert created
    features, created = await store.create_dataset(_dataset("acme", "BBB", kind="features"))
    assert created and features.id != first.id
    again, created = await store.create_dataset(_dataset("acme", "BBB"))
    assert (again.id, created) == (first.id, False)
    other_tenant, created = await store.create_dataset(_dataset("beta", "BBB"))
    assert created and other_tenant.id != first.id

    # Down again: refused while one content has several identities, fine once it has one.
    def down(connection) -> None:
        config = alembic_config(MIGRATIONS)
        config.attributes["connection"] = connection
        command.downgrade(config, "0001")

    if engine.dialect.name == "postgresql":  # pysqlite runs DDL outside the transaction
        with pytest.raises(IntegrityError):
            async with engine.begin() as conn:
                await conn.run_sync(down)
    async with engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM datasets WHERE symbol = 'BBB' AND tenant = 'acme'"))
    async with engine.begin() as conn:
        await conn.run_sync(down)


async def test_a_task_left_running_before_0003_holds_a_lapsed_lease(engine):
    await migrate(engine, "0002")
    task_id = str(uuid.uuid4())
    async with engine.begin() as conn:  # revision 0002: no lease columns
        await conn.execute(
            sa.text(
                "INSERT INTO tasks (id, tenant, kind, status, request, progress_completed,"
                " progress_total, progress_message, created_at, started_at) VALUES"
                " (:id, 'acme', 'train', 'RUNNING', '{}', 1, 4, '', 1, 2)"
            ),
            {"id": task_id},
        )
    await migrate(engine)
    store = SqlTrainingStore(engine)
    task = await store.get_task(task_id)
    assert (task.owner, task.lease_expires_at, task.attempt) == ("", 0, 0)
    assert task_id in [t.id for t in await store.lapsed_tasks(1, 100)]
    assert await store.claim_task(task_id, 0, "replica", now=5, until=10)
    task = await store.get_task(task_id)
    assert (task.owner, task.attempt, task.started_at) == ("replica", 1, 2)
