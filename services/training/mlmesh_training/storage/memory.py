"""The training service's store in process memory: the reference behaviour of the interface,
for tests and throwaway runs. No method awaits, so each is atomic on the event loop; entities
are copied in and out, so that a caller never holds the stored object."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from mlmesh_training.entities import Dataset, Model, Task
from mlmesh_training.storage.base import TrainingStore

# What makes two uploads one dataset: the tenant, the content and the metadata.
_DATASET_IDENTITY = ("tenant", "version_hash", "kind", "symbol", "timeframe", "name")
_ACTIVE = ("PENDING", "RUNNING")


def _newest_first(items: list[Any]) -> list[Any]:
    return sorted(items, key=lambda item: (item.created_at, item.id), reverse=True)


def _page(
    items: dict[str, Any], tenant: str, filters: dict[str, Any], offset: int, limit: int
) -> tuple[list[Any], int]:
    matches = [
        item
        for item in items.values()
        if item.tenant == tenant and all(getattr(item, k) == v for k, v in filters.items() if v)
    ]
    ordered = _newest_first(matches)
    return [copy.deepcopy(item) for item in ordered[offset : offset + limit]], len(ordered)


class InMemoryTrainingStore(TrainingStore):
    def __init__(self) -> None:
        self._models: dict[str, Model] = {}
        self._datasets: dict[str, Dataset] = {}
        self._tasks: dict[str, Task] = {}

    async def close(self) -> None:
        return None

    # --- models --------------------------------------------------------------------------

    async def create_model(self, model: Model) -> None:
        self._models[model.id] = copy.deepcopy(model)

    async def get_model(self, model_id: str) -> Model | None:
        return copy.deepcopy(self._models.get(model_id))

    async def list_models(self, tenant, family, offset, limit):
        return _page(self._models, tenant, {"family": family}, offset, limit)

    async def update_model(self, model_id: str, version: int, changes: dict[str, Any]) -> bool:
        model = self._models.get(model_id)
        if model is None or model.version != version:
            return False
        for name, value in {**copy.deepcopy(changes), "version": version + 1}.items():
            setattr(model, name, value)
        return True

    async def delete_model(self, model_id: str) -> None:
        self._models.pop(model_id, None)

    # --- datasets ------------------------------------------------------------------------

    async def create_dataset(self, dataset: Dataset) -> tuple[Dataset, bool]:
        identity = [getattr(dataset, name) for name in _DATASET_IDENTITY]
        for stored in self._datasets.values():
            if [getattr(stored, name) for name in _DATASET_IDENTITY] == identity:
                return copy.deepcopy(stored), False
        self._datasets[dataset.id] = copy.deepcopy(dataset)
        return dataset, True

    async def get_datasets(self, ids: Sequence[str]) -> dict[str, Dataset]:
        return {i: copy.deepcopy(self._datasets[i]) for i in ids if i in self._datasets}

    async def find_bars(self, tenant: str, symbol: str, timeframe: str) -> Dataset | None:
        bars = [
            d
            for d in self._datasets.values()
            if (d.tenant, d.kind, d.symbol, d.timeframe) == (tenant, "bars", symbol, timeframe)
        ]
        return copy.deepcopy(_newest_first(bars)[0]) if bars else None

    async def list_datasets(self, tenant, filters, offset, limit):
        return _page(self._datasets, tenant, filters, offset, limit)

    async def delete_dataset(self, dataset_id: str) -> None:
        self._datasets.pop(dataset_id, None)

    # --- tasks ---------------------------------------------------------------------------

    async def create_task(self, task: Task) -> None:
        self._tasks[task.id] = copy.deepcopy(task)

    async def get_task(self, task_id: str) -> Task | None:
        return copy.deepcopy(self._tasks.get(task_id))

    async def list_tasks(self, tenant, filters, offset, limit):
        return _page(self._tasks, tenant, filters, offset, limit)

    async def update_task(self, task_id, changes, only_if_status=(), owner=None) -> bool:
        task = self._tasks.get(task_id)
        if task is None or (only_if_status and task.status not in only_if_status):
            return False
        if owner is not None and task.owner != owner:
            return False
        for name, value in copy.deepcopy(changes).items():
            setattr(task, name, value)
        return True

    async def tasks_with_status(self, statuses: Sequence[str]) -> list[Task]:
        return [copy.deepcopy(t) for t in self._tasks.values() if t.status in statuses]

    async def lapsed_tasks(self, now: int, limit: int) -> list[Task]:
        lapsed = [
            t for t in self._tasks.values() if t.status in _ACTIVE and t.lease_expires_at <= now
        ]
        lapsed.sort(key=lambda t: (t.created_at, t.id))
        return [copy.deepcopy(t) for t in lapsed[:limit]]

    async def claim_task(self, task_id, attempt, owner, now, until) -> bool:
        task = self._tasks.get(task_id)
        if task is None or task.status not in _ACTIVE:
            return False
        if task.attempt != attempt or task.lease_expires_at > now:
            return False
        task.owner, task.lease_expires_at, task.attempt = owner, until, attempt + 1
        task.status = "RUNNING"
        task.started_at = now if task.started_at is None else task.started_at
        return True
