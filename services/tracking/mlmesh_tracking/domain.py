"""Tracking rules that need no I/O: MLflow filter building with safe quoting, page-size clamping,
text MLflow can store."""

from __future__ import annotations

from mlmesh_common.errors import InvalidArgument
from mlmesh_common.tenancy import DEFAULT_TENANT
from mlmesh_common.text import check_no_nul
from mlmesh_tracking.entities import TENANT_TAG

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
DEFAULT_ORDER_BY = ("attributes.start_time DESC",)
MAX_TAG_VALUE = 8000


def check_text(**fields: object) -> None:
    """A NUL character in any text sent on to MLflow is a 400 here: MLflow's server fails on it
    with a 500 (its PostgreSQL store cannot hold it), which callers would see as a 503."""
    for name, value in fields.items():
        check_no_nul(value, name)


def clamp_limit(limit: int) -> int:
    """0 means the default (50); anything above 100 is clamped, as MLflow's search caps it."""
    if limit < 0:
        raise InvalidArgument(f"limit must be >= 0, got {limit}", reason="INVALID_LIMIT")
    return min(limit or DEFAULT_LIMIT, MAX_LIMIT)


def quote_literal(value: str, field: str) -> str:
    """Quotes `value` as an MLflow filter string literal so it can only ever be data.

    MLflow strips the outer quotes and does not unescape anything inside, so the value is
    wrapped in whichever quote it does not contain. A value that contains both quotes or a
    backslash cannot be written as an exact MLflow literal: it is refused rather than guessed.
    """
    if len(value) > MAX_TAG_VALUE:
        raise InvalidArgument(
            f"{field} is longer than {MAX_TAG_VALUE} characters", reason="VALUE_TOO_LONG"
        )
    if "\\" in value or ("'" in value and '"' in value) or "\n" in value:
        raise InvalidArgument(
            f"{field} cannot contain a backslash, a newline, or both kinds of quote",
            reason="UNSUPPORTED_FILTER_VALUE",
        )
    quote = '"' if "'" in value else "'"
    return f"{quote}{value}{quote}"


def tag_equals(key: str, value: str, field: str) -> str:
    return f"tags.`{key}` = {quote_literal(value, field)}"


def tenant_clause(tenant: str) -> str:
    """Runs of `default` carry no tenant tag (plain MLflow clients never set one)."""
    if tenant == DEFAULT_TENANT:
        return f"tags.`{TENANT_TAG}` IS NULL"
    return tag_equals(TENANT_TAG, tenant, "tenant")


def build_run_filter(
    *,
    tenant: str,
    run_type: str = "",
    strategy_id: str = "",
    status: str = "",
    user_filter: str = "",
) -> str:
    """AND of the tenant scope, the tag filters, the status and the caller's own filter.

    `user_filter` must already be validated (MLflow's filter language has only AND, so appending
    clauses cannot change its meaning).
    """
    clauses = [tenant_clause(tenant)]
    if run_type:
        clauses.append(tag_equals("run_type", run_type, "run_type"))
    if strategy_id:
        clauses.append(tag_equals("strategy_id", strategy_id, "strategy_id"))
    if status:
        clauses.append(f"attributes.status = '{status}'")
    if user_filter.strip():
        clauses.append(user_filter.strip())
    return " AND ".join(clauses)
