"""Background tasks: persisted before they start, run as asyncio tasks whose heavy work is on
Ray, with progress, result or structured error written back; a restart never leaves a task
PENDING or RUNNING forever. A tenant reads, lists and cancels only its own tasks."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from mlmesh_common.errors import ERROR_DOMAIN, DomainError, FailedPrecondition
from mlmesh_common.resources import Page, check_owned, is_uuid, page, page_window
from mlmesh_training.entities import TASK_DONE, Task
from mlmesh_training.storage.base import TrainingStore

log = structlog.get_logger(__name__)

Progress = Callable[[int, int, str], Awaitable[None]]
Work = Callable[[Progress], Awaitable[dict[str, Any]]]
ACTIVE = ("PENDING", "RUNNING")


def error_status(code: int, reason: str, message: str, metadata: dict | None = None) -> dict:
    """A google.rpc.Status as JSON, with its ErrorInfo, as the task's `error`."""
    return {
        "code": code,
        "message": message,
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": ERROR_DOMAIN,
                "metadata": metadata or {},
            }
        ],
    }


class TaskRunner:
    def __init__(self, store: TrainingStore, clock: Callable[[], int]) -> None:
        self._store = store
        self._clock = clock
        self._running: dict[str, asyncio.Task] = {}
        self._stopping = False

    async def submit(self, tenant: str, kind: str, request: dict[str, Any], work: Work) -> Task:
        task = Task(
            id=str(uuid.uuid4()),
            tenant=tenant,
            kind=kind,
            status="PENDING",
            request=request,
            created_at=self._clock(),
        )
        await self._store.create_task(task)
        self._running[task.id] = asyncio.create_task(self._run(task.id, work))
        return task

    async def _run(self, task_id: str, work: Work) -> None:
        started = await self._store.update_task(
            task_id, {"status": "RUNNING", "started_at": self._clock()}, only_if_status=("PENDING",)
        )
        if not started:  # cancelled before it began
            return

        async def progress(completed: int, total: int, message: str = "") -> None:
            await self._store.update_task(
                task_id,
                {
                    "progress_completed": completed,
                    "progress_total": total,
                    "progress_message": message,
                },
                only_if_status=("RUNNING",),
            )

        try:
            result = await work(progress)
            changes: dict[str, Any] = {"status": "SUCCEEDED", "result": result}
        except asyncio.CancelledError:
            changes = {"status": "CANCELLED"}
            if self._stopping:
                changes = {
                    "status": "FAILED",
                    "error": error_status(
                        10, "SERVICE_STOPPED", "the training service stopped while this task ran"
                    ),
                }
        except DomainError as exc:
            code = exc.code.value[0]
            changes = {
                "status": "FAILED",
                "error": error_status(code, exc.reason, exc.message, exc.metadata),
            }
        except Exception as exc:
            log.exception("task failed", task_id=task_id)
            changes = {
                "status": "FAILED",
                "error": error_status(13, "INTERNAL", f"internal error ({type(exc).__name__})"),
            }
        finally:
            self._running.pop(task_id, None)
        changes["finished_at"] = self._clock()
        await self._store.update_task(task_id, changes, only_if_status=("RUNNING",))

    async def get(self, tenant: str, task_id: str) -> Task:
        task = await self._store.get_task(task_id) if is_uuid(task_id) else None
        check_owned(task, tenant, "task", task_id)
        return task

    async def list(
        self, tenant: str, filters: dict[str, str], skip=0, limit=0, page_token=""
    ) -> Page:
        offset, limit = page_window(limit, skip, page_token)
        items, total = await self._store.list_tasks(tenant, filters, offset, limit)
        return page(items, offset, total)

    async def cancel(self, tenant: str, task_id: str) -> Task:
        """Cancels the tenant's pending or running task; the task as it is afterwards."""
        await self._cancel(await self.get(tenant, task_id))
        return await self.get(tenant, task_id)

    async def _cancel(self, task: Task) -> None:
        if task.status in TASK_DONE:
            raise FailedPrecondition(
                f"task {task.id} is already {task.status}", reason="TASK_ALREADY_DONE"
            )
        # The status changes first, so that the running work's own final write is refused.
        await self._store.update_task(
            task.id,
            {"status": "CANCELLED", "finished_at": self._clock()},
            only_if_status=ACTIVE,
        )
        running = self._running.pop(task.id, None)
        if running is not None:
            running.cancel()

    async def recover(self) -> int:
        """Marks the tasks a previous process left PENDING or RUNNING as FAILED."""
        orphans = await self._store.tasks_with_status(ACTIVE)
        for task in orphans:
            await self._store.update_task(
                task.id,
                {
                    "status": "FAILED",
                    "finished_at": self._clock(),
                    "error": error_status(
                        10,
                        "SERVICE_RESTARTED",
                        "the training service restarted while this task ran; submit it again",
                    ),
                },
                only_if_status=ACTIVE,
            )
        return len(orphans)

    async def shutdown(self) -> None:
        """Cancels running work (graceful stop) and marks it FAILED."""
        self._stopping = True
        for running in list(self._running.values()):
            running.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)
