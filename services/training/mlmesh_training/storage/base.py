"""The training service's storage interface; the domain depends on this, never on SQL."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

from mlmesh_training.entities import Dataset, Model, Task


class TrainingStore(abc.ABC):
    """Lookups by id are not tenant-scoped (the domain answers 403); lists always are.
    Lists are newest first (created_at, then id, descending) with an exact total."""

    @abc.abstractmethod
    async def create_model(self, model: Model) -> None: ...

    @abc.abstractmethod
    async def get_model(self, model_id: str) -> Model | None: ...

    @abc.abstractmethod
    async def list_models(
        self, tenant: str, family: str, offset: int, limit: int
    ) -> tuple[list[Model], int]: ...

    @abc.abstractmethod
    async def update_model(self, model_id: str, version: int, changes: dict[str, Any]) -> bool:
        """Applies `changes` and bumps the version only if the model is still at `version`."""

    @abc.abstractmethod
    async def delete_model(self, model_id: str) -> None: ...

    @abc.abstractmethod
    async def create_dataset(self, dataset: Dataset) -> tuple[Dataset, bool]:
        """Stores `dataset` and returns it with True, or returns the tenant's existing dataset
        with the same content and metadata (version_hash, kind, symbol, timeframe, name) with
        False."""

    @abc.abstractmethod
    async def get_datasets(self, ids: Sequence[str]) -> dict[str, Dataset]: ...

    @abc.abstractmethod
    async def find_bars(self, tenant: str, symbol: str, timeframe: str) -> Dataset | None:
        """The tenant's newest `bars` dataset of that symbol and timeframe."""

    @abc.abstractmethod
    async def list_datasets(
        self, tenant: str, filters: dict[str, str], offset: int, limit: int
    ) -> tuple[list[Dataset], int]: ...

    @abc.abstractmethod
    async def delete_dataset(self, dataset_id: str) -> None: ...

    @abc.abstractmethod
    async def create_task(self, task: Task) -> None: ...

    @abc.abstractmethod
    async def get_task(self, task_id: str) -> Task | None: ...

    @abc.abstractmethod
    async def list_tasks(
        self, tenant: str, filters: dict[str, str], offset: int, limit: int
    ) -> tuple[list[Task], int]: ...

    @abc.abstractmethod
    async def update_task(
        self,
        task_id: str,
        changes: dict[str, Any],
        only_if_status: Sequence[str] = (),
        owner: str | None = None,
    ) -> bool:
        """Applies `changes`; with `only_if_status`, only while the task is in one of them;
        with `owner`, only while that replica holds it (a replica that lost its lease can
        write nothing more). True when the task was changed."""

    @abc.abstractmethod
    async def tasks_with_status(self, statuses: Sequence[str]) -> list[Task]: ...

    @abc.abstractmethod
    async def lapsed_tasks(self, now: int, limit: int) -> list[Task]:
        """Up to `limit` PENDING or RUNNING tasks whose lease ended at or before `now` (epoch
        ms), oldest first."""

    @abc.abstractmethod
    async def claim_task(
        self, task_id: str, attempt: int, owner: str, now: int, until: int
    ) -> bool:
        """Takes a lapsed task over, atomically: only if it is still PENDING or RUNNING, at
        `attempt`, and its lease ended at or before `now`. The winner holds it until `until`
        at attempt + 1, RUNNING (started_at kept, or `now`); of two replicas claiming one task,
        exactly one gets True."""

    @abc.abstractmethod
    async def close(self) -> None: ...
