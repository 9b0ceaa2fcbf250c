"""The experiment registry's storage interface; the domain depends on this, never on SQL."""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mlmesh_common.errors import InvalidArgument
from mlmesh_experiments.entities import Experiment, HistoryPoint, MetricPoint, Run


@dataclass(frozen=True)
class Clause:
    """One comparison of a run filter: kind is metric, param, tag or attribute."""

    kind: str
    key: str
    op: str
    value: Any


@dataclass(frozen=True)
class Order:
    """One sort key of a run search: kind is metric, param, tag or attribute."""

    kind: str
    key: str
    ascending: bool


@dataclass(frozen=True)
class ExperimentState:
    """What creating a run found of its experiment: whose it is and whether it is deleted."""

    tenant: str
    lifecycle_stage: str


@dataclass(frozen=True)
class ExperimentQuery:
    tenant: str
    offset: int
    limit: int
    strategy_id: str = ""
    search: str = ""
    # "active", "deleted" or "all".
    stage: str = "active"


@dataclass(frozen=True)
class HistoryQuery:
    """A metric-history read: a step range (None: open) and a point budget (0: every point)."""

    max_points: int = 0
    start_step: int | None = None
    end_step: int | None = None


@dataclass(frozen=True)
class RunQuery:
    tenant: str
    offset: int
    limit: int
    experiment_id: str = ""
    status: str = ""
    clauses: tuple[Clause, ...] = ()
    # Then newest first (start_time, id descending).
    order: tuple[Order, ...] = ()
    # False: the store may skip counting every match (and answer any total).
    count: bool = True


@dataclass(frozen=True)
class StoredArtifactRecord:
    path: str
    size_bytes: int
    sha256: str
    uri: str


@dataclass
class IdempotentCall:
    """One call made with an idempotency key: `stored` is the first call's answer when this is
    a retry; otherwise the caller makes its writes and sets `response`, the answer to keep."""

    stored: bytes | None = None
    response: bytes | None = None


def key_reused(key: str) -> InvalidArgument:
    return InvalidArgument(
        f"idempotency key {key!r} was already used for another request",
        reason="IDEMPOTENCY_KEY_REUSED",
        metadata={"idempotency_key": key},
    )


class ExperimentStore(abc.ABC):
    """Async storage of experiments and runs. Lookups by id are not tenant-scoped (the domain
    answers 403 for another tenant's id); lists and searches always are."""

    @abc.abstractmethod
    async def create_experiment(self, experiment: Experiment) -> None:
        """Raises AlreadyExists when the tenant has an active experiment of that name."""

    @abc.abstractmethod
    async def get_experiments(self, ids: Sequence[str]) -> dict[str, Experiment]:
        """The experiments among `ids` that exist, by id."""

    @abc.abstractmethod
    async def list_experiments(self, query: ExperimentQuery) -> tuple[list[Experiment], int]:
        """A page, newest first (created_at, then id, descending), and the exact total."""

    @abc.abstractmethod
    async def update_experiment(self, experiment_id: str, changes: dict[str, Any]) -> None:
        """Sets columns (incl. updated_at, lifecycle_stage); AlreadyExists on a name clash."""

    @abc.abstractmethod
    async def create_run(self, run: Run) -> ExperimentState | None:
        """Stores `run` and its tags, in one step, if its experiment exists, is `run.tenant`'s
        and is active; returns that experiment's state as found (None: no such experiment),
        stored or not, so that the caller tells a 404, a 403 and a deleted experiment apart."""

    @abc.abstractmethod
    async def get_runs(self, ids: Sequence[str], *, hydrate: bool = True) -> dict[str, Run]:
        """Runs and their experiment's lifecycle stage, with tags, params and latest metrics
        unless `hydrate` is False (a cheap existence and ownership check)."""

    @abc.abstractmethod
    async def list_runs(self, query: RunQuery) -> tuple[list[Run], int]:
        """A page, newest first (start_time, then id, descending), and the exact total."""

    @abc.abstractmethod
    async def log_batch(
        self,
        tenant: str,
        run_id: str,
        metrics: Sequence[MetricPoint],
        params: dict[str, str],
        tags: dict[str, str],
    ) -> None:
        """Writes everything in one transaction, the rows in the run's `tenant`. Raises
        InvalidArgument (and writes nothing) when a param already has another value."""

    @abc.abstractmethod
    async def end_run(self, run_id: str, status: str, end_time: int) -> bool:
        """Ends the run if it is still active; False when it had already ended."""

    @abc.abstractmethod
    async def metric_history(
        self, tenant: str, run_id: str, key: str, query: HistoryQuery
    ) -> tuple[list[HistoryPoint], int]:
        """The points of one metric of the run in `tenant` in the query's step range, by step
        then timestamp, downsampled as `mlmesh_common.history.downsample` does; and how many
        points that range holds."""

    @abc.abstractmethod
    async def record_artifact(
        self, tenant: str, run_id: str, artifact: StoredArtifactRecord, at: int
    ) -> None:
        """Records (or replaces) an uploaded artifact's size and checksum."""

    @abc.abstractmethod
    async def artifact_records(self, tenant: str, run_id: str) -> dict[str, StoredArtifactRecord]:
        """The run's artifacts in `tenant`."""

    @abc.abstractmethod
    def idempotent(
        self, tenant: str, key: str, fingerprint: str
    ) -> contextlib.AbstractAsyncContextManager[IdempotentCall]:
        """The call with idempotency `key` in `tenant`. A first call (or one whose key has
        expired): the writes made inside, and its `response`, commit together or not at all,
        and a concurrent call with the key waits for it. A retry: `stored` is the first answer
        and nothing is to be written. The same key with another `fingerprint` (another method
        or request) raises InvalidArgument."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raises when the storage cannot be reached (a health probe)."""

    @abc.abstractmethod
    async def close(self) -> None: ...
