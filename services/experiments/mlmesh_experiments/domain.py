"""Rules of the experiment registry that need no I/O: limits, names and the run filter language
(MLflow's, parsed into clauses the store binds as parameters)."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.utils.search_utils import SearchUtils

from mlmesh_common.errors import InvalidArgument
from mlmesh_common.text import check_no_nul
from mlmesh_experiments.entities import RUN_STATUSES
from mlmesh_experiments.storage.base import Clause, Order

MAX_KEY = 250
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_NAME = 255
MAX_DESCRIPTION = 1000
MAX_BATCH_METRICS = 10_000
MAX_BATCH_PARAMS = 100
MAX_BATCH_TAGS = 100

_NUMERIC_ATTRIBUTES = {"start_time", "end_time"}
_STRING_ATTRIBUTES = {"run_id", "id", "run_name", "name", "description", "status"}
_OPERATORS = {
    "metric": {"=", "!=", "<", "<=", ">", ">="},
    "param": {"=", "!=", "LIKE", "ILIKE", "IS NULL", "IS NOT NULL"},
    "tag": {"=", "!=", "LIKE", "ILIKE", "IS NULL", "IS NOT NULL"},
    "numeric_attribute": {"=", "!=", "<", "<=", ">", ">="},
    "string_attribute": {"=", "!=", "LIKE", "ILIKE", "IN", "NOT IN"},
}


def generated_name() -> str:
    return f"experiment-{uuid.uuid4().hex[:12]}"


def check_text(value: str, limit: int, field: str) -> None:
    if "\x00" in value:  # inline, not check_no_nul: this runs for every key of a log-batch
        check_no_nul(value, field)
    if len(value) > limit:
        raise InvalidArgument(
            f"{field} is {len(value)} characters long; the limit is {limit}",
            reason="VALUE_TOO_LONG",
            metadata={"field": field, "limit": str(limit)},
        )


def check_key(key: str, field: str) -> None:
    if not key or not key.strip():
        raise InvalidArgument(f"{field} keys must be non-empty", reason="INVALID_KEY")
    check_text(key, MAX_KEY, f"{field} key {key[:40]!r}")


def check_entries(entries: Mapping[str, str], value_limit: int, field: str) -> None:
    for key, value in entries.items():
        check_key(key, field)
        check_text(value, value_limit, f"{field} {key!r}")


def check_count(items: Iterable[Any], limit: int, field: str) -> None:
    check_total(sum(1 for _ in items), limit, field)


def check_total(count: int, limit: int, field: str) -> None:
    if count > limit:
        raise InvalidArgument(
            f"{count} {field} in one call; the limit is {limit}",
            reason="BATCH_TOO_LARGE",
            metadata={"field": field, "limit": str(limit)},
        )


# --- run filters ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def parse_run_filter(text: str) -> tuple[Clause, ...]:
    """MLflow's filter language (an AND of comparisons) as validated clauses. Cached: parsing
    costs more than running the search, and dashboards repeat the same filters."""
    if not text.strip():
        return ()
    if "\x00" in text:
        raise _bad_filter("the filter contains a NUL character")
    try:
        parsed = SearchUtils.parse_search_filter(text)
    except MlflowException as exc:
        raise _bad_filter(exc.message) from exc
    return tuple(_clause(item) for item in parsed)


def _clause(item: dict[str, Any]) -> Clause:
    kind, key, op, value = item["type"], item["key"], item["comparator"].upper(), item["value"]
    if kind == "parameter":
        kind = "param"
    if kind == "attribute":
        if key in _NUMERIC_ATTRIBUTES:
            allowed = _OPERATORS["numeric_attribute"]
            value = _number(value, f"attributes.{key}", integer=True)
        elif key in _STRING_ATTRIBUTES:
            allowed = _OPERATORS["string_attribute"]
            if key == "status":
                value = _status(value)
        else:
            raise _bad_filter(f"unknown attribute {key!r}")
    elif kind in ("metric", "param", "tag"):
        allowed = _OPERATORS[kind]
        if kind == "metric":
            value = _number(value, f"metrics.{key}")
    else:
        raise _bad_filter(f"{kind} filters are not supported")
    if op not in allowed:
        raise _bad_filter(f"operator {op!r} is not allowed on {kind} {key!r}")
    return Clause(kind, key, op, value)


MAX_ORDER_BY = 5
_ORDER_KINDS = {"metric": "metric", "parameter": "param", "tag": "tag", "attribute": "attribute"}


def parse_order_by(clauses: Iterable[str]) -> tuple[Order, ...]:
    """MLflow order-by clauses (`metrics.sharpe DESC`) as validated sort keys."""
    clauses = [clause for clause in clauses if clause.strip()]
    if len(clauses) > MAX_ORDER_BY:
        raise InvalidArgument(
            f"at most {MAX_ORDER_BY} order_by clauses, got {len(clauses)}",
            reason="INVALID_ORDER_BY",
        )
    orders = []
    for clause in clauses:
        try:
            kind, key, ascending = SearchUtils.parse_order_by_for_search_runs(clause)
        except MlflowException as exc:
            raise _bad_order(exc.message) from exc
        kind = _ORDER_KINDS.get(kind)
        if kind is None:
            raise _bad_order(f"cannot order by {clause!r}")
        if kind == "attribute" and key not in _NUMERIC_ATTRIBUTES | _STRING_ATTRIBUTES:
            raise _bad_order(f"unknown attribute {key!r}")
        orders.append(Order(kind, key, ascending))
    return tuple(orders)


def _bad_order(message: str) -> InvalidArgument:
    return InvalidArgument(f"invalid order_by: {message}", reason="INVALID_ORDER_BY")


def _number(value: Any, field: str, integer: bool = False) -> float | int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _bad_filter(f"{field} compares with a number, got {value!r}") from None
    return int(number) if integer else number


def _status(value: Any) -> str:
    # MLflow's grammar allows IN lists on run_id only, so a status is one string.
    status = str(value).upper()
    if status not in RUN_STATUSES:
        raise _bad_filter(f"unknown run status {value!r}")
    return status


def _bad_filter(message: str) -> InvalidArgument:
    return InvalidArgument(f"invalid filter: {message}", reason="INVALID_FILTER")
