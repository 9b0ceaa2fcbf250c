"""One contract for every training store (in-memory, SQLite, PostgreSQL): id lookups, tenant-scoped
lists newest first with exact totals, optimistic model versions, dataset dedup by content, the
newest bars, conditional task updates, and task leases (owner-fenced writes, lapsed leases, one
winner per claim). Each test works in a tenant of its own."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from mlmesh_common.db import create_engine
from mlmesh_training.entities import Dataset, Model, Task
from mlmesh_training.storage.memory import InMemoryTrainingStore
from mlmesh_training.storage.migrate import migrate
from mlmesh_training.storage.sql import SqlTrainingStore
from tests.helpers.postgres import backend_url


@pytest.fixture(scope="module", params=["memory", "sqlite", "postgresql"])
async def store(request, tmp_path_factory):
    if request.param == "memory":
        store = InMemoryTrainingStore()
    else:
        directory = tmp_path_factory.mktemp("db")
        engine = create_engine(backend_url(request, request.param, directory, "training"))
        await migrate(engine)
        store = SqlTrainingStore(engine)
    yield store
    await store.close()


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def model(tenant: str, created_at: int, family: str = "machine_learning", **fields) -> Model:
    return Model(
        id=str(uuid.uuid4()),
        tenant=tenant,
        name=f"m{created_at}",
        model_type="xgboost",
        family=family,
        plugin_key="ml.xgboost",
        parameters={"max_depth": 3},
        version=1,
        created_at=created_at,
        updated_at=created_at,
        **fields,
    )


def dataset(tenant: str, created_at: int, kind: str = "features", **fields) -> Dataset:
    values = {
        "id": str(uuid.uuid4()),
        "tenant": tenant,
        "name": f"d{created_at}",
        "kind": kind,
        "symbol": "SPX",
        "timeframe": "1d",
        "columns": ["close"],
        "row_count": 10,
        "start_date": 0,
        "end_date": 1,
        "version_hash": uuid.uuid4().hex,
        "storage_uri": "file:///x",
        "created_at": created_at,
    }
    return Dataset(**{**values, **fields})


def task(
    tenant: str, created_at: int, status: str = "PENDING", kind: str = "train", **fields
) -> Task:
    return Task(
        id=str(uuid.uuid4()),
        tenant=tenant,
        kind=kind,
        status=status,
        request={"model_id": "m"},
        created_at=created_at,
        **fields,
    )


async def test_models_by_id_listed_newest_first_per_tenant(store, tenant):
    models = [model(tenant, t) for t in (1, 3, 2)]
    for m in models:
        await store.create_model(m)
    await store.create_model(model("other-" + tenant, 9))
    await store.create_model(model(tenant, 4, family="statistical"))
    assert await store.get_model(models[0].id) == models[0]
    assert await store.get_model(str(uuid.uuid4())) is None
    page, total = await store.list_models(tenant, "machine_learning", 1, 10)
    assert total == 3
    assert [m.created_at for m in page] == [2, 1]
    everything, total = await store.list_models(tenant, "", 0, 2)
    assert total == 4 and [m.created_at for m in everything] == [4, 3]


async def test_model_updates_are_optimistic_and_bump_the_version(store, tenant):
    m = model(tenant, 1)
    await store.create_model(m)
    assert await store.update_model(m.id, 1, {"name": "renamed", "metrics": {"mse": 0.5}})
    assert not await store.update_model(m.id, 1, {"name": "stale"})
    assert not await store.update_model(str(uuid.uuid4()), 1, {"name": "nobody"})
    stored = await store.get_model(m.id)
    assert (stored.name, stored.version, stored.metrics) == ("renamed", 2, {"mse": 0.5})
    await store.delete_model(m.id)
    assert await store.get_model(m.id) is None


async def test_a_returned_entity_is_a_copy(store, tenant):
    m = model(tenant, 1)
    await store.create_model(m)
    m.name = "changed after create"
    fetched = await store.get_model(m.id)
    fetched.parameters["max_depth"] = 99
    assert (await store.get_model(m.id)).parameters == {"max_depth": 3}
    assert (await store.get_model(m.id)).name == "m1"


async def test_datasets_dedup_by_content_and_metadata_within_a_tenant(store, tenant):
    first = dataset(tenant, 1, version_hash="h" * 64, name="spx")
    assert await store.create_dataset(first) == (first, True)
    again = dataset(tenant, 2, version_hash="h" * 64, name="spx")
    assert await store.create_dataset(again) == (first, False)
    for other in (
        dataset("other-" + tenant, 3, version_hash="h" * 64, name="spx"),
        dataset(tenant, 4, version_hash="h" * 64, name="spx", kind="bars"),
        dataset(tenant, 5, version_hash="h" * 64, name="spx", timeframe="1h"),
        dataset(tenant, 6, version_hash="h" * 64, name="another name"),
    ):
        assert await store.create_dataset(other) == (other, True)
    missing = str(uuid.uuid4())
    assert await store.get_datasets([first.id, missing]) == {first.id: first}
    assert await store.get_datasets([]) == {}
    listed, total = await store.list_datasets(tenant, {"symbol": "SPX", "kind": "features"}, 0, 10)
    assert total == 3 and [d.created_at for d in listed] == [6, 5, 1]


async def test_the_newest_bars_of_a_symbol_and_timeframe(store, tenant):
    old = dataset(tenant, 1, kind="bars")
    new = dataset(tenant, 2, kind="bars")
    for d in (old, new, dataset(tenant, 3), dataset(tenant, 4, kind="bars", timeframe="1h")):
        await store.create_dataset(d)
    assert await store.find_bars(tenant, "SPX", "1d") == new
    assert await store.find_bars(tenant, "SPX", "1w") is None
    assert await store.find_bars("other-" + tenant, "SPX", "1d") is None
    await store.delete_dataset(new.id)
    assert await store.find_bars(tenant, "SPX", "1d") == old


async def test_task_updates_are_conditional_on_the_status(store, tenant):
    t = task(tenant, 1)
    await store.create_task(t)
    assert await store.update_task(t.id, {"status": "RUNNING", "started_at": 5}, ("PENDING",))
    assert not await store.update_task(t.id, {"status": "CANCELLED"}, ("PENDING",))
    assert await store.update_task(t.id, {"progress_completed": 2, "result": {"a": [1]}})
    stored = await store.get_task(t.id)
    assert (stored.status, stored.started_at, stored.progress_completed) == ("RUNNING", 5, 2)
    assert stored.result == {"a": [1]}
    assert not await store.update_task(str(uuid.uuid4()), {"status": "FAILED"})


async def test_tasks_listed_by_status_and_kind(store, tenant):
    tasks = [task(tenant, 1), task(tenant, 2, "RUNNING", "tune"), task(tenant, 3, "SUCCEEDED")]
    for t in tasks:
        await store.create_task(t)
    listed, total = await store.list_tasks(tenant, {"status": "", "kind": "train"}, 0, 10)
    assert total == 2 and [t.created_at for t in listed] == [3, 1]
    active = await store.tasks_with_status(("PENDING", "RUNNING"))
    assert {t.id for t in active if t.tenant == tenant} == {tasks[0].id, tasks[1].id}


async def test_task_writes_fenced_by_their_owner(store, tenant):
    t = task(tenant, 1, "RUNNING", owner="a", lease_expires_at=100, attempt=1)
    await store.create_task(t)
    assert not await store.update_task(t.id, {"progress_completed": 1}, ("RUNNING",), owner="b")
    assert await store.update_task(t.id, {"lease_expires_at": 200}, ("RUNNING",), owner="a")
    stored = await store.get_task(t.id)
    assert (stored.owner, stored.lease_expires_at, stored.attempt) == ("a", 200, 1)
    assert stored.progress_completed == 0


async def test_lapsed_tasks_are_the_active_ones_whose_lease_ended(store, tenant):
    lapsed_pending = task(tenant, 1, owner="a", lease_expires_at=50, attempt=0)
    lapsed_running = task(tenant, 2, "RUNNING", owner="a", lease_expires_at=100, attempt=1)
    held = task(tenant, 3, "RUNNING", owner="b", lease_expires_at=101, attempt=1)
    done = task(tenant, 4, "SUCCEEDED", owner="a", lease_expires_at=0, attempt=1)
    for t in (lapsed_pending, lapsed_running, held, done):
        await store.create_task(t)
    found = [t for t in await store.lapsed_tasks(100, 10_000) if t.tenant == tenant]
    assert [t.id for t in found] == [lapsed_pending.id, lapsed_running.id]
    assert (found[1].owner, found[1].attempt) == ("a", 1)


async def test_a_claim_takes_a_lapsed_task_over_once(store, tenant):
    t = task(tenant, 1, "RUNNING", owner="a", lease_expires_at=100, attempt=1, started_at=7)
    await store.create_task(t)
    assert not await store.claim_task(t.id, 1, "b", now=99, until=200)  # still held
    assert not await store.claim_task(t.id, 0, "b", now=100, until=200)  # stale attempt
    assert await store.claim_task(t.id, 1, "b", now=100, until=200)
    # Another replica that saw the same lapsed lease loses, and so does the old owner.
    assert not await store.claim_task(t.id, 1, "c", now=150, until=250)
    assert not await store.update_task(t.id, {"status": "SUCCEEDED"}, ("RUNNING",), owner="a")
    stored = await store.get_task(t.id)
    assert (stored.owner, stored.lease_expires_at, stored.attempt) == ("b", 200, 2)
    assert (stored.status, stored.started_at) == ("RUNNING", 7)
    pending = task(tenant, 2, owner="a", lease_expires_at=0, attempt=0)
    await store.create_task(pending)
    assert await store.claim_task(pending.id, 0, "b", now=100, until=200)
    stored = await store.get_task(pending.id)
    assert (stored.status, stored.started_at, stored.attempt) == ("RUNNING", 100, 1)
    finished = task(tenant, 3, "FAILED", owner="a", lease_expires_at=0, attempt=1)
    await store.create_task(finished)
    assert not await store.claim_task(finished.id, 1, "b", now=100, until=200)
    assert not await store.claim_task(str(uuid.uuid4()), 0, "b", now=100, until=200)


async def test_concurrent_claims_have_exactly_one_winner(store, tenant):
    t = task(tenant, 1, "RUNNING", owner="dead", lease_expires_at=10, attempt=3)
    await store.create_task(t)
    owners = [f"r{n}" for n in range(8)]
    won = await asyncio.gather(*(store.claim_task(t.id, 3, o, 20, 1_000) for o in owners))
    assert sum(won) == 1
    stored = await store.get_task(t.id)
    assert stored.owner == owners[won.index(True)] and stored.attempt == 4
