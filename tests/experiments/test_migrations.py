"""The registry's Alembic history on SQLite and PostgreSQL: a database made by an earlier
revision upgrades with its data, and the latest revision downgrades again."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import inspect

from mlmesh_common.artifacts import LocalArtifactStore
from mlmesh_common.db import alembic_config, create_engine
from mlmesh_experiments.entities import MetricPoint
from mlmesh_experiments.service import ExperimentsService
from mlmesh_experiments.storage.migrate import MIGRATIONS, migrate
from mlmesh_experiments.storage.sql import SqlExperimentStore
from tests.experiments.conftest import registry_url


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request, tmp_path):
    engine = create_engine(registry_url(request, request.param, tmp_path))
    yield engine
    await engine.dispose()


async def history_table(engine) -> tuple[set[str], list]:
    async with engine.connect() as conn:

        def read(sync_conn):
            found = inspect(sync_conn)
            columns = {column["name"] for column in found.get_columns("metric_history")}
            return columns, found.get_foreign_keys("metric_history")

        return await conn.run_sync(read)


async def downgrade(engine, revision: str) -> None:
    def run(connection) -> None:
        config = alembic_config(MIGRATIONS)
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


async def test_metric_history_keeps_its_points_across_0002(engine, tmp_path):
    await migrate(engine, "0001")
    service = ExperimentsService(SqlExperimentStore(engine), LocalArtifactStore(tmp_path))
    experiment = await service.create_experiment("t", {"name": "m"})
    run = await service.create_run("t", experiment.id)
    before = [MetricPoint("loss", 1.0 / (step + 1), step, 1000 + step) for step in range(5)]
    await service.log_batch("t", run.id, metrics=before)
    columns, foreign_keys = await history_table(engine)
    assert "id" in columns and [fk["referred_table"] for fk in foreign_keys] == ["runs"]

    await migrate(engine)
    columns, foreign_keys = await history_table(engine)
    assert columns == {"run_id", "key", "step", "timestamp", "value", "is_nan"}
    assert foreign_keys == []
    after = [MetricPoint("loss", 0.1, 5, 2000), MetricPoint("loss", float("nan"), 6, 2001)]
    await service.log_batch("t", run.id, metrics=after)
    points, total = await service.metric_history("t", run.id, "loss")
    assert total == 7
    assert [p.step for p in points] == list(range(7))
    assert [p.value for p in points[:6]] == [p.value for p in before] + [0.1]

    await downgrade(engine, "0001")
    columns, foreign_keys = await history_table(engine)
    assert "id" in columns and [fk["referred_table"] for fk in foreign_keys] == ["runs"]
    points, total = await service.metric_history("t", run.id, "loss")
    assert total == 7
    await migrate(engine)
    assert (await history_table(engine))[0] == columns - {"id"}
