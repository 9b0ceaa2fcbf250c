"""ORM tables of the experiment registry. Times are Unix epoch milliseconds (BIGINT), the same on
SQLite and PostgreSQL. Every row carries its tenant: a run's tags, params, metrics and artifacts
that of their run."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    LargeBinary,
    SmallInteger,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ID = String(36)
KEY = String(250)
TENANT = String(63)


class Base(DeclarativeBase):
    pass


class ExperimentRow(Base):
    __tablename__ = "experiments"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant: Mapped[str] = mapped_column(TENANT, nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    description: Mapped[str] = mapped_column(String(1000), nullable=False, default="")
    artifact_location: Mapped[str] = mapped_column(Text, nullable=False, default="")
    tags: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    lifecycle_stage: Mapped[str] = mapped_column(String(16), nullable=False, default="active")
    strategy_id: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    dataset_version: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    feature_version: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    model_version: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    git_commit: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    mlflow_run_id: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    parameters: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    metrics: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    artifacts: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    updated_at: Mapped[int] = mapped_column(BigInteger, nullable=False)

    __table_args__ = (
        # A name is unique among a tenant's active experiments only: archived ones keep theirs.
        Index(
            "uq_experiments_tenant_active_name",
            "tenant",
            "name",
            unique=True,
            postgresql_where=text("lifecycle_stage = 'active'"),
            sqlite_where=text("lifecycle_stage = 'active'"),
        ),
        Index("ix_experiments_tenant_created", "tenant", "created_at", "id"),
        Index("ix_experiments_tenant_strategy", "tenant", "strategy_id"),
    )


class RunRow(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant: Mapped[str] = mapped_column(TENANT, nullable=False)
    experiment_id: Mapped[str] = mapped_column(ID, ForeignKey("experiments.id"), nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    description: Mapped[str] = mapped_column(String(1000), nullable=False, default="")
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    start_time: Mapped[int] = mapped_column(BigInteger, nullable=False)
    end_time: Mapped[int | None] = mapped_column(BigInteger)
    artifact_uri: Mapped[str] = mapped_column(Text, nullable=False, default="")

    __table_args__ = (
        Index("ix_runs_experiment_start", "experiment_id", "start_time", "id"),
        Index("ix_runs_tenant_start", "tenant", "start_time", "id"),
    )


class TagRow(Base):
    __tablename__ = "run_tags"

    tenant: Mapped[str] = mapped_column(TENANT, nullable=False)
    run_id: Mapped[str] = mapped_column(ID, ForeignKey("runs.id"), primary_key=True)
    key: Mapped[str] = mapped_column(KEY, primary_key=True)
    # No index on value: values up to 8,000 chars exceed PostgreSQL's btree row limit.
    value: Mapped[str] = mapped_column(String(8000), nullable=False)


class ParamRow(Base):
    __tablename__ = "run_params"

    tenant: Mapped[str] = mapped_column(TENANT, nullable=False)
    run_id: Mapped[str] = mapped_column(ID, ForeignKey("runs.id"), primary_key=True)
    key: Mapped[str] = mapped_column(KEY, primary_key=True)
    value: Mapped[str] = mapped_column(String(6000), nullable=False)


# Every logged point, one row each; no primary key: points are only ever inserted and read by
# (run, key) in step order, so the index below is the only one. Not a foreign key to runs
# either: runs are never deleted, the service checks the run before logging, and a
# per-row foreign-key check costs PostgreSQL more than the insert itself. NaN is stored as
# is_nan (SQLite turns a NaN REAL into NULL).
metric_history = Table(
    "metric_history",
    Base.metadata,
    Column("tenant", TENANT, nullable=False),
    Column("run_id", ID, nullable=False),
    Column("key", KEY, nullable=False),
    Column("step", BigInteger, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    Column("value", Float(53), nullable=False),
    Column("is_nan", Boolean, nullable=False, default=False),
    # The index MLflow users add by hand: history of one key of one run, in step order.
    Index("ix_metric_history_run_key_step", "run_id", "key", "step"),
)


# Each metric's history pre-aggregated in aligned blocks of steps, at every width of
# mlmesh_common.history.BLOCK_WIDTHS (level L: blocks of 64 * 16**(L-1) steps, block = step
# >> (2 + 4L)):
# how many points a block holds, its first and last point in history order (step, timestamp,
# is_nan, value), and its lowest and highest number (NULL when it holds none; NaN and
# infinities never count), ties to the earliest. Maintained in the transaction of every history
# insert, so that a chart of a long history reads a few thousand blocks, not every point.
metric_buckets = Table(
    "metric_buckets",
    Base.metadata,
    Column("tenant", TENANT, nullable=False),
    Column("run_id", ID, primary_key=True),
    Column("key", KEY, primary_key=True),
    Column("level", SmallInteger, primary_key=True),
    Column("block", BigInteger, primary_key=True),
    Column("count", BigInteger, nullable=False),
    Column("first_step", BigInteger, nullable=False),
    Column("first_ts", BigInteger, nullable=False),
    Column("first_nan", Boolean, nullable=False),
    Column("first_value", Float(53), nullable=False),
    Column("last_step", BigInteger, nullable=False),
    Column("last_ts", BigInteger, nullable=False),
    Column("last_nan", Boolean, nullable=False),
    Column("last_value", Float(53), nullable=False),
    Column("low_step", BigInteger),
    Column("low_ts", BigInteger),
    Column("low_value", Float(53)),
    Column("high_step", BigInteger),
    Column("high_ts", BigInteger),
    Column("high_value", Float(53)),
)


class LatestMetricRow(Base):
    """The latest point per (run, key): highest step, then latest timestamp. Maintained in the
    same transaction as the history insert, so that run reads and metric filters never scan
    the history."""

    __tablename__ = "latest_metrics"

    tenant: Mapped[str] = mapped_column(TENANT, nullable=False)
    run_id: Mapped[str] = mapped_column(ID, ForeignKey("runs.id"), primary_key=True)
    key: Mapped[str] = mapped_column(KEY, primary_key=True)
    step: Mapped[int] = mapped_column(BigInteger, nullable=False)
    timestamp: Mapped[int] = mapped_column(BigInteger, nullable=False)
    value: Mapped[float] = mapped_column(Float(53), nullable=False)
    is_nan: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)

    __table_args__ = (Index("ix_latest_metrics_key_value", "key", "value"),)


class ArtifactRow(Base):
    __tablename__ = "artifacts"

    tenant: Mapped[str] = mapped_column(TENANT, nullable=False)
    run_id: Mapped[str] = mapped_column(ID, ForeignKey("runs.id"), primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    uri: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)


class IdempotencyKeyRow(Base):
    """The first answer to a write sent with an idempotency key, kept for a bounded time and
    replayed to retries carrying the same key. Written in the write's own transaction."""

    __tablename__ = "idempotency_keys"

    tenant: Mapped[str] = mapped_column(TENANT, primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # The method and a digest of the request: a key reused for another request is refused.
    fingerprint: Mapped[str] = mapped_column(String(255), nullable=False)
    response: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)

    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)
