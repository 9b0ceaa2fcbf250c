"""The registry's Alembic history on SQLite and PostgreSQL: a database made by the first
revision upgrades with its data, and the latest revision downgrades again."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import inspect, text

from mlmesh_common import history
from mlmesh_common.artifacts import LocalArtifactStore
from mlmesh_common.db import alembic_config, create_engine
from mlmesh_experiments.entities import MetricPoint
from mlmesh_experiments.service import ExperimentsService
from mlmesh_experiments.storage.base import HistoryQuery
from mlmesh_experiments.storage.migrate import MIGRATIONS, migrate
from mlmesh_experiments.storage.sql import SqlExperimentStore
from tests.helpers.postgres import backend_url

DETAIL_TABLES = ("run_tags", "run_params", "latest_metrics", "metric_history", "artifacts")


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request, tmp_path):
    engine = create_engine(backend_url(request, request.param, tmp_path, "registry"))
    yield engine
    await engine.dispose()


async def columns(engine, table: str) -> tuple[set[str], list[str]]:
    """A table's column names, and the tables its foreign keys refer to."""
    async with engine.connect() as conn:

        def read(sync_conn):
            found = inspect(sync_conn)
            names = {column["name"] for column in found.get_columns(table)}
            return names, [fk["referred_table"] for fk in found.get_foreign_keys(table)]

        return await conn.run_sync(read)


async def downgrade(engine, revision: str) -> None:
    def run(connection) -> None:
        config = alembic_config(MIGRATIONS)
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


async def test_run_details_survive_the_migrations(engine, tmp_path):
    await migrate(engine, "0001")
    service = ExperimentsService(SqlExperimentStore(engine), LocalArtifactStore(tmp_path))
    experiment = await service.create_experiment("acme", {"name": "m"})
    run = await service.create_run("acme", experiment.id)  # no tags: the runs table only
    # The details as revision 0001 stored them (the service writes the latest schema).
    async with engine.begin() as conn:
        for step in range(5):
            await conn.execute(
                text(
                    "INSERT INTO metric_history (run_id, key, step, timestamp, value, is_nan)"
                    " VALUES (:run, 'loss', :step, :step, :value, false)"
                ),
                {"run": run.id, "step": step, "value": 1.0 / (step + 1)},
            )
        await conn.execute(
            text(
                "INSERT INTO latest_metrics (run_id, key, step, timestamp, value, is_nan)"
                " VALUES (:run, 'loss', 4, 4, 0.2, false)"
            ),
            {"run": run.id},
        )
        await conn.execute(
            text("INSERT INTO run_params (run_id, key, value) VALUES (:run, 'lr', '0.1')"),
            {"run": run.id},
        )
        await conn.execute(
            text("INSERT INTO run_tags (run_id, key, value) VALUES (:run, 'team', 'q')"),
            {"run": run.id},
        )
    assert "id" in (await columns(engine, "metric_history"))[0]

    await migrate(engine)
    history, referred = await columns(engine, "metric_history")
    assert history == {"tenant", "run_id", "key", "step", "timestamp", "value", "is_nan"}
    assert referred == []
    for table in DETAIL_TABLES:
        assert "tenant" in (await columns(engine, table))[0], table
    async with engine.connect() as conn:
        tenants = await conn.execute(
            text("SELECT DISTINCT tenant FROM metric_history UNION SELECT tenant FROM run_tags")
        )
        assert {row[0] for row in tenants} == {"acme"}
    # The old rows read back in their run's tenant, new ones join them, and the details
    # stay invisible from another tenant's side of the store.
    fetched = await service.get_run("acme", run.id)
    assert (fetched.tags, fetched.params, fetched.metrics) == (
        {"team": "q"},
        {"lr": "0.1"},
        {"loss": 0.2},
    )
    await service.log_batch("acme", run.id, metrics=[MetricPoint("loss", 0.1, 5, 5)])
    points, total = await service.metric_history("acme", run.id, "loss")
    assert total == 6 and [p.step for p in points] == list(range(6))
    assert await service._store.metric_history("other", run.id, "loss", HistoryQuery()) == ([], 0)

    await downgrade(engine, "0001")
    history, referred = await columns(engine, "metric_history")
    assert "id" in history and "tenant" not in history and referred == ["runs"]
    async with engine.connect() as conn:
        assert (await conn.scalar(text("SELECT count(*) FROM metric_history"))) == 6
    await migrate(engine)
    assert "tenant" in (await columns(engine, "metric_history"))[0]


async def test_the_block_pyramid_is_backfilled_and_dropped(engine, tmp_path):
    """Revision 0005 builds metric_buckets from the histories already stored; the history
    reads then answer from it exactly as from every point; a downgrade drops it and leaves the
    points, and upgrading again rebuilds it."""
    await migrate(engine, "0004")
    service = ExperimentsService(SqlExperimentStore(engine), LocalArtifactStore(tmp_path))
    experiment = await service.create_experiment("acme", {"name": "p"})
    run = await service.create_run("acme", experiment.id)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO metric_history"
                ' (tenant, run_id, key, step, "timestamp", value, is_nan)'
                " VALUES ('acme', :run, 'loss', :step, :step, :value, :nan)"
            ),
            [
                {"run": run.id, "step": s, "value": (s * 7919) % 1009 / 1009, "nan": s % 97 == 3}
                for s in range(-2000, 6000)
            ],
        )

    async def answers() -> list:
        query = HistoryQuery(max_points=40, start_step=-1500, end_step=5500)
        points, total = await service._store.metric_history("acme", run.id, "loss", query)
        whole, _ = await service._store.metric_history(
            "acme", run.id, "loss", HistoryQuery(start_step=-1500, end_step=5500)
        )
        assert total == len(whole) == 7001
        expected = history.downsample(whole, 40, block=history.block_width(-1500, 5500, 40))
        assert [(p.step, p.value) for p in points if p.value == p.value] == [
            (p.step, p.value) for p in expected if p.value == p.value
        ]
        return points

    await migrate(engine)
    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM metric_buckets")) > 0
    before = await answers()
    await downgrade(engine, "0004")
    async with engine.connect() as conn:

        def tables(sync_conn) -> list[str]:
            return inspect(sync_conn).get_table_names()

        assert "metric_buckets" not in await conn.run_sync(tables)
        assert await conn.scalar(text("SELECT count(*) FROM metric_history")) == 8000
    await migrate(engine)
    assert [(p.step, p.timestamp) for p in await answers()] == [
        (p.step, p.timestamp) for p in before
    ]
