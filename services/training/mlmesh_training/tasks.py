"""Background tasks: persisted before they start, run as asyncio tasks whose heavy work is on
Ray, with progress, result or structured error written back. A tenant reads, lists and cancels
only its own tasks.

Every replica of the service shares the tasks table. A replica holds each task it runs under a
lease (`owner`, `lease_expires_at`) that it renews every heartbeat, and writes to the task only
while it holds it. Every scan it takes over, with one conditional UPDATE that only one replica
can win, the PENDING or RUNNING tasks whose lease lapsed (their replica died or lost the
database) or was handed over (SIGTERM), and runs them again from their stored request as the
next `attempt`. A replica that cannot renew a lease before it lapses stops that work itself, so
that no task runs on two replicas at once (given clocks that agree to well within a
heartbeat)."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from mlmesh_common.errors import ERROR_DOMAIN, DomainError, FailedPrecondition
from mlmesh_common.resources import Page, check_owned, is_uuid, page, page_window
from mlmesh_common.text import check_no_nul
from mlmesh_training.entities import TASK_DONE, Task
from mlmesh_training.storage.base import TrainingStore

log = structlog.get_logger(__name__)

Progress = Callable[[int, int, str], Awaitable[None]]
Work = Callable[[Progress], Awaitable[dict[str, Any]]]
# Rebuilds the work of a task taken over from its stored kind, tenant and request.
Resume = Callable[[Task], Awaitable[Work]]
ACTIVE = ("PENDING", "RUNNING")
SCAN_LIMIT = 100


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


def replica_name() -> str:
    """A name no other process shares: host, process id and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Leases:
    """How this replica holds tasks; see the module docstring."""

    owner: str
    lease_s: float = 30.0
    heartbeat_s: float = 10.0
    scan_s: float = 5.0
    max_attempts: int = 3

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_s * 2 <= self.lease_s:
            raise ValueError("the task heartbeat must be at most half the task lease")


class TaskRunner:
    def __init__(
        self, store: TrainingStore, clock: Callable[[], int], leases: Leases | None = None
    ) -> None:
        self._store = store
        self._clock = clock
        self._leases = leases or Leases(owner=replica_name())
        self._running: dict[str, asyncio.Task] = {}
        # Each task this replica holds, and until when (epoch ms) its last written lease runs.
        self._held: dict[str, int] = {}
        self._lost: set[str] = set()
        self._stopping = False
        self._taking_over = True
        self._resume: Resume | None = None
        self._loops: list[asyncio.Task] = []

    @property
    def owner(self) -> str:
        return self._leases.owner

    def _until(self) -> int:
        return self._clock() + int(self._leases.lease_s * 1000)

    async def submit(
        self, tenant: str, kind: str, request: dict[str, Any], work: Work, task_id: str = ""
    ) -> Task:
        task = Task(
            id=task_id or str(uuid.uuid4()),
            tenant=tenant,
            kind=kind,
            status="PENDING",
            request=request,
            created_at=self._clock(),
            owner=self.owner,
            lease_expires_at=self._until(),
            attempt=1,
        )
        await self._store.create_task(task)
        self._start(task.id, work, task.lease_expires_at)
        return task

    def _start(self, task_id: str, work: Work, until: int) -> None:
        self._held[task_id] = until
        self._running[task_id] = asyncio.create_task(self._run(task_id, work))

    async def _run(self, task_id: str, work: Work) -> None:
        try:
            await self._run_held(task_id, work)
        finally:
            self._running.pop(task_id, None)
            self._held.pop(task_id, None)
            self._lost.discard(task_id)

    async def _run_held(self, task_id: str, work: Work) -> None:
        owner = self.owner
        await self._store.update_task(
            task_id,
            {"status": "RUNNING", "started_at": self._clock()},
            only_if_status=("PENDING",),
            owner=owner,
        )
        current = await self._store.get_task(task_id)
        if current is None or current.status != "RUNNING" or current.owner != owner:
            return  # cancelled before it began, or taken over already

        async def progress(completed: int, total: int, message: str = "") -> None:
            changes = {
                "progress_completed": completed,
                "progress_total": total,
                "progress_message": message,
            }
            if not await self._store.update_task(task_id, changes, ("RUNNING",), owner=owner):
                # Cancelled, or taken over by a replica that saw this one's lease lapse (a
                # stalled event loop): the work stops here rather than at the next heartbeat.
                self._lose(task_id)

        changes: dict[str, Any] | None
        try:
            result = await work(progress)
            changes = {"status": "SUCCEEDED", "result": result}
        except asyncio.CancelledError:
            if task_id in self._lost:
                changes = None  # another replica holds it now: write nothing
            elif self._stopping:
                # Handed over: the lease ends now, so that a replica takes it over at once.
                changes = {"lease_expires_at": 0, "progress_message": "handed over"}
                await self._store.update_task(task_id, changes, ACTIVE, owner=owner)
                log.info("task handed over", task_id=task_id)
                return
            else:  # cancelled by the tenant: the status is CANCELLED already
                changes = {"status": "CANCELLED"}
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
        if changes is None:
            return
        changes["finished_at"] = self._clock()
        await self._store.update_task(task_id, changes, only_if_status=("RUNNING",), owner=owner)

    async def get(self, tenant: str, task_id: str) -> Task:
        task = await self._store.get_task(task_id) if is_uuid(task_id) else None
        check_owned(task, tenant, "task", task_id)
        return task

    async def list(
        self, tenant: str, filters: dict[str, str], skip=0, limit=0, page_token=""
    ) -> Page:
        check_no_nul(filters, "filter")
        offset, limit = page_window(limit, skip, page_token)
        items, total = await self._store.list_tasks(tenant, filters, offset, limit)
        return page(items, offset, total)

    async def cancel(self, tenant: str, task_id: str) -> Task:
        """Cancels the tenant's pending or running task; the task as it is afterwards. The
        replica running it, if another, stops it at its next heartbeat."""
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

    # --- leases --------------------------------------------------------------------------

    def start(self, resume: Resume) -> None:
        """Renews this replica's leases and takes lapsed tasks over (the first scan at once),
        rebuilding their work with `resume`, until `shutdown`."""
        self._resume = resume
        self._loops = [
            asyncio.create_task(self._every(self._leases.heartbeat_s, self.renew, first=False)),
            asyncio.create_task(self._every(self._leases.scan_s, self.take_over, first=True)),
        ]

    async def _every(self, interval_s: float, step: Callable[[], Awaitable[Any]], first: bool):
        if not first:
            await asyncio.sleep(interval_s)
        while True:
            try:
                await step()
            except Exception:
                log.warning("task lease step failed", step=step.__name__, exc_info=True)
            await asyncio.sleep(interval_s)

    async def renew(self) -> None:
        """Extends the lease of every task this replica runs; stops the work of a task whose
        lease it lost (cancelled or taken over elsewhere), or could not renew before it
        lapses."""
        heartbeat_ms = int(self._leases.heartbeat_s * 1000)
        for task_id in list(self._held):
            until = self._until()
            try:
                held: bool | None = await self._store.update_task(
                    task_id, {"lease_expires_at": until}, ACTIVE, owner=self.owner
                )
            except Exception:
                log.warning("task lease not renewed", task_id=task_id, exc_info=True)
                held = None
            if task_id not in self._held:
                continue  # it ended meanwhile
            if held:
                self._held[task_id] = until
            elif held is False or self._clock() + heartbeat_ms >= self._held[task_id]:
                self._lose(task_id)

    def _lose(self, task_id: str) -> None:
        log.warning("task lease lost; stopping its work", task_id=task_id)
        self._lost.add(task_id)
        running = self._running.get(task_id)
        if running is not None:
            running.cancel()

    def stop_taking_over(self) -> None:
        """No more claims from this replica (it is draining: a task claimed now would only be
        handed over again at its stop); its own tasks run on."""
        self._taking_over = False

    async def take_over(self) -> int:
        """Claims the tasks whose lease lapsed and runs them again; how many it claimed."""
        if self._stopping or not self._taking_over or self._resume is None:
            return 0
        claimed = 0
        for task in await self._store.lapsed_tasks(self._clock(), SCAN_LIMIT):
            if task.id in self._running or self._stopping or not self._taking_over:
                continue
            now = self._clock()
            until = now + int(self._leases.lease_s * 1000)
            if not await self._store.claim_task(task.id, task.attempt, self.owner, now, until):
                continue  # another replica won it
            claimed += 1
            attempt = task.attempt + 1
            log.info(
                "task taken over",
                task_id=task.id,
                kind=task.kind,
                attempt=attempt,
                previous_owner=task.owner,
            )
            if attempt > self._leases.max_attempts:
                await self._exhausted(task.id, attempt - 1)
                continue
            self._start(task.id, self._resumed(task), until)
        return claimed

    def _resumed(self, task: Task) -> Work:
        resume = self._resume

        async def work(progress: Progress) -> dict[str, Any]:
            await progress(0, 0, f"taken over (attempt {task.attempt + 1}); starting again")
            return await (await resume(task))(progress)

        return work

    async def _exhausted(self, task_id: str, attempts: int) -> None:
        await self._store.update_task(
            task_id,
            {
                "status": "FAILED",
                "finished_at": self._clock(),
                "error": error_status(
                    10,
                    "TASK_ATTEMPTS_EXHAUSTED",
                    f"the task was started {attempts} times and never finished; submit it again",
                    {"attempts": str(attempts)},
                ),
            },
            only_if_status=ACTIVE,
            owner=self.owner,
        )

    async def shutdown(self) -> None:
        """Graceful stop: cancels running work and hands each task over (its lease ends now)
        instead of failing it."""
        self._stopping = True
        for loop in self._loops:
            loop.cancel()
        for running in list(self._running.values()):
            running.cancel()
        await asyncio.gather(*self._loops, *self._running.values(), return_exceptions=True)
