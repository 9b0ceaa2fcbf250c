"""The training service's tables on SQLAlchemy async: PostgreSQL (asyncpg) or SQLite."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from mlmesh_common.db import reader
from mlmesh_training.entities import Dataset, Model, Task
from mlmesh_training.storage.base import TrainingStore
from mlmesh_training.storage.models import DatasetRow, ModelRow, TaskRow

_ACTIVE = ("PENDING", "RUNNING")


def _columns(row_type: type) -> list[str]:
    return [column.key for column in row_type.__table__.columns]


class SqlTrainingStore(TrainingStore):
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # Reads autocommit: one round trip per query, no transaction around it.
        self._reader = reader(engine)
        self._entities = {ModelRow: Model, DatasetRow: Dataset, TaskRow: Task}

    async def close(self) -> None:
        await self._engine.dispose()

    def _entity(self, row_type: type, row: Any) -> Any:
        return self._entities[row_type](**{name: getattr(row, name) for name in _columns(row_type)})

    async def _insert(self, row_type: type, entity: Any) -> None:
        values = {name: getattr(entity, name) for name in _columns(row_type)}
        async with self._engine.begin() as conn:
            await conn.execute(insert(row_type).values(values))

    async def _get(self, row_type: type, ids: Sequence[str]) -> dict[str, Any]:
        if not ids:
            return {}
        async with self._reader.connect() as conn:
            rows = await conn.execute(select(row_type.__table__).where(row_type.id.in_(ids)))
            return {row.id: self._entity(row_type, row) for row in rows}

    async def _list(
        self, row_type: type, tenant: str, filters: dict[str, Any], offset: int, limit: int
    ) -> tuple[list[Any], int]:
        conditions = [row_type.tenant == tenant]
        conditions += [getattr(row_type, k) == v for k, v in filters.items() if v]
        async with self._reader.connect() as conn:
            total = await conn.scalar(select(func.count()).select_from(row_type).where(*conditions))
            rows = await conn.execute(
                select(row_type.__table__)
                .where(*conditions)
                .order_by(row_type.created_at.desc(), row_type.id.desc())
                .offset(offset)
                .limit(limit)
            )
            return [self._entity(row_type, row) for row in rows], total or 0

    async def _delete(self, row_type: type, item_id: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(delete(row_type).where(row_type.id == item_id))

    # --- models --------------------------------------------------------------------------

    async def create_model(self, model: Model) -> None:
        await self._insert(ModelRow, model)

    async def get_model(self, model_id: str) -> Model | None:
        return (await self._get(ModelRow, [model_id])).get(model_id)

    async def list_models(self, tenant, family, offset, limit):
        return await self._list(ModelRow, tenant, {"family": family}, offset, limit)

    async def update_model(self, model_id: str, version: int, changes: dict[str, Any]) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(ModelRow)
                .where(ModelRow.id == model_id, ModelRow.version == version)
                .values(**changes, version=version + 1)
            )
            return result.rowcount == 1

    async def delete_model(self, model_id: str) -> None:
        await self._delete(ModelRow, model_id)

    # --- datasets ------------------------------------------------------------------------

    async def create_dataset(self, dataset: Dataset) -> tuple[Dataset, bool]:
        try:
            await self._insert(DatasetRow, dataset)
            return dataset, True
        except IntegrityError:
            identity = ("tenant", "version_hash", "kind", "symbol", "timeframe", "name")
            same = [getattr(DatasetRow, name) == getattr(dataset, name) for name in identity]
            async with self._reader.connect() as conn:
                row = (await conn.execute(select(DatasetRow.__table__).where(*same))).one()
                return self._entity(DatasetRow, row), False

    async def get_datasets(self, ids: Sequence[str]) -> dict[str, Dataset]:
        return await self._get(DatasetRow, ids)

    async def find_bars(self, tenant: str, symbol: str, timeframe: str) -> Dataset | None:
        async with self._reader.connect() as conn:
            row = (
                await conn.execute(
                    select(DatasetRow.__table__)
                    .where(
                        DatasetRow.tenant == tenant,
                        DatasetRow.kind == "bars",
                        DatasetRow.symbol == symbol,
                        DatasetRow.timeframe == timeframe,
                    )
                    .order_by(DatasetRow.created_at.desc(), DatasetRow.id.desc())
                    .limit(1)
                )
            ).first()
            return None if row is None else self._entity(DatasetRow, row)

    async def list_datasets(self, tenant, filters, offset, limit):
        return await self._list(DatasetRow, tenant, filters, offset, limit)

    async def delete_dataset(self, dataset_id: str) -> None:
        await self._delete(DatasetRow, dataset_id)

    # --- tasks ---------------------------------------------------------------------------

    async def create_task(self, task: Task) -> None:
        await self._insert(TaskRow, task)

    async def get_task(self, task_id: str) -> Task | None:
        return (await self._get(TaskRow, [task_id])).get(task_id)

    async def list_tasks(self, tenant, filters, offset, limit):
        return await self._list(TaskRow, tenant, filters, offset, limit)

    async def update_task(self, task_id, changes, only_if_status=(), owner=None) -> bool:
        conditions = [TaskRow.id == task_id]
        if only_if_status:
            conditions.append(TaskRow.status.in_(only_if_status))
        if owner is not None:
            conditions.append(TaskRow.owner == owner)
        async with self._engine.begin() as conn:
            result = await conn.execute(update(TaskRow).where(*conditions).values(**changes))
            return result.rowcount == 1

    async def tasks_with_status(self, statuses: Sequence[str]) -> list[Task]:
        async with self._reader.connect() as conn:
            rows = await conn.execute(select(TaskRow.__table__).where(TaskRow.status.in_(statuses)))
            return [self._entity(TaskRow, row) for row in rows]

    async def lapsed_tasks(self, now: int, limit: int) -> list[Task]:
        async with self._reader.connect() as conn:
            rows = await conn.execute(
                select(TaskRow.__table__)
                .where(TaskRow.status.in_(_ACTIVE), TaskRow.lease_expires_at <= now)
                .order_by(TaskRow.created_at, TaskRow.id)
                .limit(limit)
            )
            return [self._entity(TaskRow, row) for row in rows]

    async def claim_task(self, task_id, attempt, owner, now, until) -> bool:
        # One conditional UPDATE: PostgreSQL re-checks the WHERE clause on the row a concurrent
        # claim committed (READ COMMITTED), SQLite runs one writer at a time; either way the
        # second claim finds the attempt moved on and the lease renewed, and changes nothing.
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(TaskRow)
                .where(
                    TaskRow.id == task_id,
                    TaskRow.status.in_(_ACTIVE),
                    TaskRow.attempt == attempt,
                    TaskRow.lease_expires_at <= now,
                )
                .values(
                    owner=owner,
                    lease_expires_at=until,
                    attempt=attempt + 1,
                    status="RUNNING",
                    started_at=func.coalesce(TaskRow.started_at, now),
                )
            )
            return result.rowcount == 1
