"""Alembic environment: migrations run on the connection handed over by `migrate()`, or on
MLMESH_EXPERIMENTS_DATABASE_URL when Alembic runs from the command line."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from mlmesh_experiments.storage.models import Base

config = context.config


def _run(connection) -> None:
    # render_as_batch: SQLite can only ALTER tables by copying them.
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_url(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    from mlmesh_experiments.config import ExperimentsSettings

    asyncio.run(_run_from_url(ExperimentsSettings().database_url))
