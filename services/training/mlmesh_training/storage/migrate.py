"""Schema migrations of the training service with Alembic: at service start-up, and as a command
(`python -m mlmesh_training.storage.migrate [revision]`, default `head`)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from mlmesh_common import db

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Optuna's study tables share the database and record their schema in `alembic_version`.
VERSION_TABLE = "mlmesh_training_alembic_version"


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    await db.migrate(engine, MIGRATIONS, revision, VERSION_TABLE)


def main() -> None:
    from mlmesh_training.config import TrainingSettings

    async def run() -> None:
        engine = db.create_engine(TrainingSettings().database_url)
        await migrate(engine, sys.argv[1] if len(sys.argv) > 1 else "head")
        await engine.dispose()

    asyncio.run(run())


if __name__ == "__main__":
    main()
