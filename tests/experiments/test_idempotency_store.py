"""The store's idempotent calls on every backend (in-memory, SQLite, PostgreSQL): the first call's
writes and answer are kept together, a retry gets the answer and writes nothing, a failed call
leaves the key free, and a key reused for another request is refused."""

from __future__ import annotations

import uuid

import pytest

from mlmesh_common.errors import InvalidArgument
from mlmesh_experiments.entities import MetricPoint


async def test_first_answer_is_replayed_and_nothing_is_written_again(service, tenant):
    experiment = await service.create_experiment(tenant, {})
    run = await service.create_run(tenant, experiment.id)
    key = uuid.uuid4().hex
    answers = []
    for _ in range(2):
        async with service.idempotent(tenant, key, "LogBatch:a") as call:
            if call.stored is not None:
                answers.append(call.stored)
                continue
            await service.log_batch(tenant, run.id, metrics=[MetricPoint("m", 1.0, 0, 1)])
            call.response = b"first"
            answers.append(call.response)
    assert answers == [b"first", b"first"]
    _, total = await service.metric_history(tenant, run.id, "m")
    assert total == 1


async def test_a_failed_call_keeps_its_key_free(service, store, tenant):
    experiment = await service.create_experiment(tenant, {})
    run = await service.create_run(tenant, experiment.id)
    key = uuid.uuid4().hex
    with pytest.raises(InvalidArgument):
        async with service.idempotent(tenant, key, "LogBatch:b") as call:
            await service.log_batch(tenant, run.id, params=[("p", "1")])
            raise InvalidArgument("refused after writing")
    async with service.idempotent(tenant, key, "LogBatch:b") as call:
        assert call.stored is None
        call.response = b"second"
    if type(store).__name__ != "InMemoryExperimentStore":
        # The failed call's write was rolled back with it (the in-memory store keeps no
        # transactions).
        assert (await service.get_run(tenant, run.id)).params == {}


async def test_a_key_reused_for_another_request_is_refused(service, tenant):
    key = uuid.uuid4().hex
    async with service.idempotent(tenant, key, "CreateRun:x") as call:
        call.response = b"x"
    with pytest.raises(InvalidArgument) as error:
        async with service.idempotent(tenant, key, "CreateRun:y"):
            pass
    assert error.value.reason == "IDEMPOTENCY_KEY_REUSED"
    # Another tenant's same key is another key.
    async with service.idempotent(tenant + "-b", key, "CreateRun:y") as call:
        assert call.stored is None
        call.response = b"y"
