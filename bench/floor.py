"""The database's share of a log-batch, timed alone: the experiments service's own metrics
statement (`PG_LOG_METRICS`), straight through asyncpg on the service's database, with the same
points as the service gets. No gRPC, no request decoding, no validation, no run check: a bound
on what the service's requests can reach on this machine."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import asyncpg
from sqlalchemy import make_url

from bench.clients import Point
from mlmesh_common.tenancy import DEFAULT_TENANT
from mlmesh_experiments.entities import MetricPoint
from mlmesh_experiments.storage.sql import PG_LOG_METRICS, pg_metric_arguments


@contextmanager
def log_batch_statement(
    database_url: str, run_id: str, batches: list[list[Point]]
) -> Iterator[Callable[[int], object]]:
    """`call(i)` executes batch i's statement on one connection, as the service does. The
    harness's clients send no tenant, so their runs are the default tenant's."""
    loop = asyncio.new_event_loop()
    url = make_url(database_url).set(drivername="postgresql")  # libpq form, for asyncpg
    conn = loop.run_until_complete(asyncpg.connect(url.render_as_string(hide_password=False)))
    arguments = [
        pg_metric_arguments(DEFAULT_TENANT, run_id, [MetricPoint(*point) for point in batch])
        for batch in batches
    ]
    try:
        yield lambda i: loop.run_until_complete(conn.execute(PG_LOG_METRICS, *arguments[i]))
    finally:
        loop.run_until_complete(conn.close())
        loop.close()
