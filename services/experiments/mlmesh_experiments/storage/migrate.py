"""Schema migrations with Alembic: at service start-up, and as a command
(`python -m mlmesh_experiments.storage.migrate [revision]`, default `head`)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrades the database behind `engine` to `revision` in one transaction."""

    def upgrade(connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with engine.begin() as connection:
        await connection.run_sync(upgrade)


def main() -> None:
    from mlmesh_experiments.config import ExperimentsSettings
    from mlmesh_experiments.storage.sql import create_engine

    async def run() -> None:
        engine = create_engine(ExperimentsSettings().database_url)
        await migrate(engine, sys.argv[1] if len(sys.argv) > 1 else "head")
        await engine.dispose()

    asyncio.run(run())


if __name__ == "__main__":
    main()
