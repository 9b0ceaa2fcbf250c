"""Run filter clauses (parsed and validated by the domain) as SQLAlchemy conditions: values are
always bound parameters, never SQL text."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, exists

from mlmesh_experiments.storage.base import Clause
from mlmesh_experiments.storage.models import LatestMetricRow, ParamRow, RunRow, TagRow

ATTRIBUTE_COLUMNS = {
    "run_id": RunRow.id,
    "id": RunRow.id,
    "run_name": RunRow.name,
    "name": RunRow.name,
    "description": RunRow.description,
    "status": RunRow.status,
    "start_time": RunRow.start_time,
    "end_time": RunRow.end_time,
}
_KEYED = {"param": ParamRow, "tag": TagRow}


def _compare(column: Any, op: str, value: Any) -> ColumnElement[bool]:
    match op:
        case "=":
            return column == value
        case "!=":
            return column != value
        case "<":
            return column < value
        case "<=":
            return column <= value
        case ">":
            return column > value
        case ">=":
            return column >= value
        case "LIKE":
            return column.like(value)
        case "ILIKE":
            return column.ilike(value)
        case "IN":
            return column.in_(value)
        case "NOT IN":
            return column.not_in(value)
    raise ValueError(f"unsupported operator {op!r}")


def condition(clause: Clause) -> ColumnElement[bool]:
    """The WHERE condition on `runs` for one clause."""
    if clause.kind == "attribute":
        return _compare(ATTRIBUTE_COLUMNS[clause.key], clause.op, clause.value)
    if clause.kind == "metric":
        metric = LatestMetricRow
        return exists().where(
            metric.run_id == RunRow.id,
            metric.tenant == RunRow.tenant,
            metric.key == clause.key,
            metric.is_nan.is_(False),
            _compare(metric.value, clause.op, clause.value),
        )
    table = _KEYED[clause.kind]
    has_key = exists().where(
        table.run_id == RunRow.id, table.tenant == RunRow.tenant, table.key == clause.key
    )
    if clause.op == "IS NULL":
        return ~has_key
    if clause.op == "IS NOT NULL":
        return has_key
    return has_key.where(_compare(table.value, clause.op, clause.value))
