"""The training database holds two Alembic histories: the service's own (its version table
`mlmesh_training_alembic_version`) and Optuna's study tables (`alembic_version`)."""

from __future__ import annotations

import sqlalchemy as sa

from mlmesh_common.db import create_engine
from mlmesh_training.storage.migrate import VERSION_TABLE, migrate
from mlmesh_training.tuning import open_storage, sync_url


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
    assert versions[VERSION_TABLE] == "0001"
    assert versions["alembic_version"] != "0001"  # Optuna's own revision


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
    assert versions == {VERSION_TABLE: "0001"}
    assert "alembic_version" not in tables
    open_storage(sync_url(url)).engine.dispose()  # Optuna now finds the table free
    assert "studies" in _tables_and_versions(sync_url(url))[0]
