"""Run storage behind the tracking service: an MLflow tracking server reached with its client.

MLflow's client blocks, so every call runs in a bounded thread pool and is cut off after
`timeout_s`: an unreachable server is a quick `Unavailable`, never a hang.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import functools
import json
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)
from mlflow.tracking import MlflowClient
from mlflow.utils.search_utils import SearchUtils

from mlmesh_common.errors import InvalidArgument, Unavailable
from mlmesh_tracking.entities import ExperimentRecord, MetricPoint, RunRecord

T = TypeVar("T")
_MISSING = (RESOURCE_DOES_NOT_EXIST, INVALID_PARAMETER_VALUE)


class RunStore(abc.ABC):
    """What the tracking service needs from a tracking backend."""

    @abc.abstractmethod
    async def search_runs(
        self,
        experiment_ids: Sequence[str],
        filter_string: str,
        order_by: Sequence[str],
        max_results: int,
        page_token: str,
    ) -> tuple[list[RunRecord], str]:
        """One page of runs and the token of the next page ("" on the last)."""

    @abc.abstractmethod
    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run, or None when it does not exist."""

    @abc.abstractmethod
    async def get_metric_history(self, run_id: str, key: str) -> list[MetricPoint]:
        """Every logged value of `key` ordered by step then timestamp ([] for an unknown key)."""

    @abc.abstractmethod
    async def list_experiments(self, names: Sequence[str]) -> list[ExperimentRecord]:
        """The active experiments called `names`, or every active one when `names` is empty."""

    @abc.abstractmethod
    def validate_filter(self, filter_string: str) -> None:
        """Raises InvalidArgument unless `filter_string` is a valid search filter."""

    @abc.abstractmethod
    def validate_order_by(self, order_by: Sequence[str]) -> None:
        """Raises InvalidArgument unless every clause is a valid order-by clause."""

    @abc.abstractmethod
    def validate_page_token(self, page_token: str) -> None:
        """Raises InvalidArgument unless `page_token` is one this store handed out."""


def _run_record(run: Run) -> RunRecord:
    info, data = run.info, run.data
    return RunRecord(
        run_id=info.run_id,
        run_name=info.run_name or "",
        experiment_id=info.experiment_id,
        status=info.status,
        start_time=info.start_time or 0,
        end_time=info.end_time,
        artifact_uri=info.artifact_uri or "",
        params=dict(data.params),
        metrics=dict(data.metrics),
        tags=dict(data.tags),
    )


def _error_code(error: RestException) -> int:
    code = error.error_code
    return ErrorCode.Value(code) if code in ErrorCode.DESCRIPTOR.values_by_name else -1


# MLflow's own rule for run ids.
_RUN_ID = re.compile(r"[a-zA-Z0-9][\w\-]{0,255}", re.ASCII)

_COMPARATORS = {
    "metric": SearchUtils.VALID_METRIC_COMPARATORS,
    "parameter": SearchUtils.VALID_PARAM_COMPARATORS,
    "tag": SearchUtils.VALID_TAG_COMPARATORS,
    "attribute": SearchUtils.VALID_STRING_ATTRIBUTE_COMPARATORS
    | SearchUtils.VALID_NUMERIC_ATTRIBUTE_COMPARATORS,
    "dataset": SearchUtils.VALID_DATASET_COMPARATORS,
}


def _server_error(action: str, error: RestException) -> Unavailable:
    return Unavailable(f"MLflow {action} failed: {error.message}", reason="MLFLOW_ERROR")


class MlflowRunStore(RunStore):
    def __init__(self, tracking_uri: str, *, timeout_s: float, workers: int) -> None:
        self._client = MlflowClient(tracking_uri=tracking_uri)
        self._uri = tracking_uri
        self._timeout_s = timeout_s
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mlflow")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """Runs a client call off the event loop; RestException (the server's answer) passes."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))
        try:
            return await asyncio.wait_for(future, self._timeout_s)
        except TimeoutError as exc:
            raise Unavailable(
                f"MLflow at {self._uri} did not answer within {self._timeout_s:g} s",
                reason="MLFLOW_UNAVAILABLE",
            ) from exc
        except RestException:
            raise
        except (MlflowException, OSError) as exc:
            # The client wraps connection errors in a plain MlflowException.
            raise Unavailable(
                f"MLflow at {self._uri} is unavailable", reason="MLFLOW_UNAVAILABLE"
            ) from exc

    async def search_runs(self, experiment_ids, filter_string, order_by, max_results, page_token):
        try:
            page = await self._call(
                self._client.search_runs,
                experiment_ids=list(experiment_ids),
                filter_string=filter_string,
                run_view_type=ViewType.ACTIVE_ONLY,
                max_results=max_results,
                order_by=list(order_by),
                page_token=page_token or None,
            )
        except RestException as exc:
            if _error_code(exc) == INVALID_PARAMETER_VALUE:
                raise InvalidArgument(exc.message, reason="INVALID_SEARCH") from exc
            raise _server_error("search", exc) from exc
        return [_run_record(run) for run in page], page.token or ""

    async def get_run(self, run_id):
        if not _RUN_ID.fullmatch(run_id):
            return None  # MLflow never issues such an id; don't send it over the wire.
        try:
            run = await self._call(self._client.get_run, run_id)
        except RestException as exc:
            if _error_code(exc) in _MISSING:
                return None
            raise _server_error("get run", exc) from exc
        return _run_record(run)

    async def get_metric_history(self, run_id, key):
        try:
            history = await self._call(self._client.get_metric_history, run_id, key)
        except RestException as exc:
            if _error_code(exc) in _MISSING:
                return []
            raise _server_error("metric history", exc) from exc
        points = [MetricPoint(m.step, m.value, m.timestamp) for m in history]
        points.sort(key=lambda p: (p.step, p.timestamp))
        return points

    async def list_experiments(self, names):
        def fetch_all() -> list:
            experiments, token = [], None
            while True:
                page = self._client.search_experiments(
                    view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token
                )
                experiments.extend(page)
                token = page.token
                if not token:
                    return experiments

        try:
            experiments = await self._call(fetch_all)
        except RestException as exc:
            raise _server_error("experiment search", exc) from exc
        wanted = set(names)
        records = [
            ExperimentRecord(
                experiment_id=e.experiment_id,
                name=e.name,
                artifact_location=e.artifact_location or "",
                lifecycle_stage=e.lifecycle_stage,
                tags=dict(e.tags),
                creation_time=e.creation_time or 0,
                last_update_time=e.last_update_time or 0,
            )
            for e in experiments
            if not wanted or e.name in wanted
        ]
        return sorted(records, key=lambda r: (r.name, r.experiment_id))

    def validate_filter(self, filter_string):
        try:
            clauses = SearchUtils.parse_search_filter(filter_string)
        except MlflowException as exc:
            raise InvalidArgument(
                f"invalid filter: {exc.message}", reason="INVALID_FILTER"
            ) from exc
        # The parser takes any operator token; the server would reject it later, as a 500.
        for clause in clauses:
            allowed = _COMPARATORS.get(clause["type"], set())
            if clause["comparator"] not in allowed:
                raise InvalidArgument(
                    f"invalid filter: operator {clause['comparator']!r} is not allowed on"
                    f" {clause['type']} {clause['key']!r} (allowed: {sorted(allowed)})",
                    reason="INVALID_FILTER",
                )

    def validate_page_token(self, page_token):
        # MLflow's tokens are base64 of {"offset": n}; its own parser lets some malformed
        # tokens through to a server error, so the shape is checked strictly here.
        try:
            decoded = json.loads(base64.b64decode(page_token, validate=True))
            offset = decoded["offset"]
            valid = isinstance(offset, int) and not isinstance(offset, bool) and offset > 0
        except (ValueError, TypeError, KeyError):
            valid = False
        if not valid:
            raise InvalidArgument(
                "invalid page_token: pass back a next_page_token from a previous response",
                reason="INVALID_PAGE_TOKEN",
            )

    def validate_order_by(self, order_by):
        for clause in order_by:
            try:
                SearchUtils.parse_order_by_for_search_runs(clause)
            except MlflowException as exc:
                raise InvalidArgument(
                    f"invalid order_by {clause!r}: {exc.message}", reason="INVALID_ORDER_BY"
                ) from exc
