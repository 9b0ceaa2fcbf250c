"""Models and datasets: their create/read/update/delete rules (plugin checks, optimistic
versions, uploads, previews, tenancy), and the training data a DatasetSpec resolves to."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import ray

from mlmesh_common.artifacts import ArtifactStore, parse_upload
from mlmesh_common.errors import Conflict, InvalidArgument, NotFound
from mlmesh_common.resources import (
    Page,
    check_all_owned,
    check_owned,
    is_uuid,
    page,
    page_window,
)
from mlmesh_common.text import check_no_nul
from mlmesh_training import backtest
from mlmesh_training import datasets as ds
from mlmesh_training.cv import CVConfig, split
from mlmesh_training.entities import Dataset, Model
from mlmesh_training.plugins import get_plugin, plugins
from mlmesh_training.plugins.base import ModelPlugin
from mlmesh_training.storage.base import TrainingStore
from mlmesh_training.tuning import EvalData

MAX_PREVIEW_ROWS = 1000
FAMILIES = ("statistical", "machine_learning", "deep_learning", "ensemble")


@dataclass(frozen=True)
class DatasetSpec:
    """Which rows a job trains on: the feature datasets joined with the forward-return target
    of `symbol`'s bars; dates are ISO 8601 strings, empty for no bound."""

    feature_ids: list[str] = field(default_factory=list)
    symbol: str = ""
    timeframe: str = "1d"
    start_date: str = ""
    end_date: str = ""
    target_horizon: int = 1
    # The bars dataset of the target; empty: the tenant's newest of the symbol and timeframe.
    bars_id: str = ""


@dataclass(frozen=True)
class TrainingData:
    """The rows a request trains on, its folds, and the versions of the data behind them."""

    X: pd.DataFrame
    y: pd.Series
    feature_columns: list[str]
    folds: list
    dataset_version: str
    feature_version: str
    bars: Dataset  # the dataset the target came from
    # r_{t+1} = close[t+1] / close[t] - 1 of the bars at each row (NaN without a next bar).
    next_returns: pd.Series
    bar_index: np.ndarray  # each row's position in the bars dataset

    def shared(self, backtester: backtest.Backtester | None = None) -> EvalData:
        """The data in Ray's object store, once for every evaluation that uses it."""
        return EvalData(ray.put(self.X), ray.put(self.y), self.folds, backtester)

    def backtester(
        self, config: backtest.BacktestConfig | None, cv: CVConfig
    ) -> backtest.Backtester | None:
        if config is None:
            return None
        return backtest.Backtester(config, cv, len(self.X), self.next_returns, self.bar_index)


class Catalog:
    def __init__(
        self, store: TrainingStore, artifacts: ArtifactStore, clock: Callable[[], int]
    ) -> None:
        self._store = store
        self._artifacts = artifacts
        self._clock = clock

    # --- models --------------------------------------------------------------------------

    async def create_model(
        self, tenant: str, name: str, model_type: str, family: str, parameters: dict[str, Any]
    ) -> Model:
        if not name.strip() or len(name) > 255:
            raise InvalidArgument("name must be 1..255 characters", reason="INVALID_NAME")
        check_no_nul({"name": name, "parameters": parameters}, "model")
        plugin = _plugin_for(model_type, family)
        plugin.check_params(parameters)
        now = self._clock()
        model = Model(
            id=str(uuid.uuid4()),
            tenant=tenant,
            name=name,
            model_type=model_type,
            family=str(plugin.family),
            plugin_key=plugin.key,
            parameters=parameters,
            version=1,
            created_at=now,
            updated_at=now,
        )
        await self._store.create_model(model)
        return model

    async def get_model(self, tenant: str, model_id: str) -> Model:
        model = await self._store.get_model(model_id) if is_uuid(model_id) else None
        check_owned(model, tenant, "model", model_id)
        return model

    async def list_models(
        self, tenant: str, family: str = "", skip: int = 0, limit: int = 0, page_token: str = ""
    ) -> Page:
        _check_family(family)
        offset, limit = page_window(limit, skip, page_token)
        models, total = await self._store.list_models(tenant, family, offset, limit)
        return page(models, offset, total)

    async def update_model(
        self,
        tenant: str,
        model_id: str,
        *,
        name: str = "",
        parameters: dict[str, Any] | None = None,
        version: int = 0,
    ) -> Model:
        model = await self.get_model(tenant, model_id)
        if version and version != model.version:
            raise Conflict(
                f"model {model_id} is at version {model.version}, not {version}",
                reason="VERSION_MISMATCH",
                metadata={"current_version": str(model.version)},
            )
        changes: dict[str, Any] = {"updated_at": self._clock()}
        check_no_nul({"name": name, "parameters": parameters}, "model")
        if name:
            if len(name) > 255:
                raise InvalidArgument("name must be 1..255 characters", reason="INVALID_NAME")
            changes["name"] = name
        if parameters is not None:
            get_plugin(model.plugin_key).check_params(parameters)
            changes["parameters"] = parameters
        if not await self._store.update_model(model_id, model.version, changes):
            raise Conflict(f"model {model_id} changed concurrently", reason="VERSION_MISMATCH")
        return await self.get_model(tenant, model_id)

    async def delete_model(self, tenant: str, model_id: str) -> None:
        await self.get_model(tenant, model_id)
        await self._store.delete_model(model_id)

    # --- datasets ------------------------------------------------------------------------

    async def create_dataset(
        self,
        tenant: str,
        *,
        name: str,
        kind: str,
        symbol: str,
        timeframe: str,
        content_type: str,
        body: bytes,
    ) -> tuple[Dataset, bool]:
        """The new dataset and True, or the tenant's existing one of identical content and
        metadata and False."""
        if not symbol or len(symbol) > 64:
            raise InvalidArgument("symbol must be 1..64 characters", reason="INVALID_SYMBOL")
        check_no_nul({"name": name, "symbol": symbol, "timeframe": timeframe}, "dataset")
        timeframe = timeframe or "1d"
        # Multipart with a `file` part, or the raw body (artifact_path names the table).
        _, data = parse_upload(content_type, body, "upload")
        frame = ds.parse_table(data, kind)
        check_no_nul([str(column) for column in frame.columns], "columns")
        version_hash = hashlib.sha256(data).hexdigest()
        # Content-addressed: datasets of one content and kind share the table, and an upload
        # that turns out to be an existing dataset rewrites the same file, leaving no orphan.
        stored = await self._artifacts.put(
            tenant, "datasets", version_hash, f"{kind}.parquet", ds.to_parquet(frame)
        )
        dataset = Dataset(
            id=str(uuid.uuid4()),
            tenant=tenant,
            name=(name or f"{symbol}-{kind}-{timeframe}")[:255],
            kind=kind,
            symbol=symbol,
            timeframe=timeframe,
            columns=list(frame.columns),
            row_count=len(frame),
            start_date=ds.epoch_ms(frame.index[0]),
            end_date=ds.epoch_ms(frame.index[-1]),
            version_hash=version_hash,
            storage_uri=stored.uri,
            created_at=self._clock(),
        )
        return await self._store.create_dataset(dataset)

    async def get_dataset(self, tenant: str, dataset_id: str) -> Dataset:
        found = await self._store.get_datasets([dataset_id]) if is_uuid(dataset_id) else {}
        dataset = found.get(dataset_id)
        check_owned(dataset, tenant, "dataset", dataset_id)
        return dataset

    async def list_datasets(
        self, tenant: str, filters: dict[str, str], skip=0, limit=0, page_token=""
    ) -> Page:
        check_no_nul(filters, "filter")
        offset, limit = page_window(limit, skip, page_token)
        items, total = await self._store.list_datasets(tenant, filters, offset, limit)
        return page(items, offset, total)

    async def _frame(self, dataset: Dataset) -> pd.DataFrame:
        tenant, hash_, kind = dataset.tenant, dataset.version_hash, dataset.kind
        try:
            data = await self._artifacts.get(tenant, "datasets", hash_, f"{kind}.parquet")
        except NotFound:  # uploaded before tables were content-addressed: its own folder
            data = await self._artifacts.get(tenant, "datasets", dataset.id, "data.parquet")
        return ds.from_parquet(data)

    async def preview_dataset(
        self, tenant: str, dataset_id: str, rows: int
    ) -> tuple[list[str], list[dict]]:
        if rows < 0:
            raise InvalidArgument("rows must be >= 0", reason="INVALID_ROWS")
        dataset = await self.get_dataset(tenant, dataset_id)
        frame = (await self._frame(dataset)).head(min(rows or 20, MAX_PREVIEW_ROWS))
        records = [
            {"timestamp": moment.isoformat(), **{k: _json_number(v) for k, v in row.items()}}
            for moment, row in zip(frame.index, frame.to_dict("records"), strict=True)
        ]
        return list(frame.columns), records

    async def delete_dataset(self, tenant: str, dataset_id: str) -> None:
        await self.get_dataset(tenant, dataset_id)
        await self._store.delete_dataset(dataset_id)

    # --- training data -------------------------------------------------------------------

    async def training_data(self, tenant: str, spec: DatasetSpec, cv: CVConfig) -> TrainingData:
        """The dataset spec resolved to rows and folds: ids, dates and CV checked, 422 when
        too few rows align."""
        horizon = spec.target_horizon
        start = ds.parse_date(spec.start_date, "start_date")
        end = ds.parse_date(spec.end_date, "end_date")
        if start is not None and end is not None and start >= end:
            raise InvalidArgument("start_date must be before end_date", reason="INVALID_DATES")
        features = await self._feature_datasets(tenant, list(spec.feature_ids))
        bars = await self._bars(tenant, spec)
        close = (await self._frame(bars))["close"]
        frames = [(d.name or d.id[:8], await self._frame(d)) for d in features]
        assembled = ds.assemble(close, frames, target_horizon=horizon, start=start, end=end)
        cv.validate(len(assembled.X), horizon)
        feature_hashes = "".join(sorted(d.version_hash for d in features))
        return TrainingData(
            X=assembled.X,
            y=assembled.y,
            feature_columns=assembled.feature_columns,
            folds=split(len(assembled.X), cv, horizon),
            dataset_version=bars.version_hash[:16],
            feature_version=hashlib.sha256(feature_hashes.encode()).hexdigest()[:16],
            bars=bars,
            next_returns=backtest.next_returns(close, assembled.X.index),
            bar_index=close.index.get_indexer(assembled.X.index),
        )

    async def _bars(self, tenant: str, spec: DatasetSpec) -> Dataset:
        """The bars dataset `bars_id` names, or else the newest of the symbol and timeframe."""
        timeframe = spec.timeframe
        if not spec.bars_id:
            bars = await self._store.find_bars(tenant, spec.symbol, timeframe)
            if bars is None:
                raise NotFound(
                    f"no bars dataset for symbol {spec.symbol!r} and timeframe {timeframe}",
                    reason="BARS_NOT_FOUND",
                    metadata={"symbol": spec.symbol, "timeframe": timeframe},
                )
            return bars
        bars = await self.get_dataset(tenant, spec.bars_id)
        if bars.kind != "bars":
            raise InvalidArgument(
                f"dataset {bars.id} is a {bars.kind} dataset, not bars",
                reason="NOT_A_BARS_DATASET",
                metadata={"bars_id": bars.id},
            )
        if (spec.symbol and spec.symbol != bars.symbol) or timeframe != bars.timeframe:
            raise InvalidArgument(
                f"bars dataset {bars.id} is {bars.symbol} {bars.timeframe}, not "
                f"{spec.symbol or bars.symbol} {timeframe}",
                reason="BARS_MISMATCH",
                metadata={"bars_id": bars.id},
            )
        return bars

    async def _feature_datasets(self, tenant: str, ids: list[str]) -> list[Dataset]:
        if not ids:
            raise InvalidArgument(
                "dataset.feature_ids must name at least one dataset", reason="MISSING_FEATURES"
            )
        found = await self._store.get_datasets([i for i in ids if is_uuid(i)])
        check_all_owned(found, ids, tenant, "dataset")
        return [found[i] for i in ids]


def _check_family(family: str) -> None:
    if family and family not in FAMILIES:
        raise InvalidArgument(
            f"family must be one of {', '.join(FAMILIES)}", reason="INVALID_FAMILY"
        )


def _plugin_for(model_type: str, family: str) -> ModelPlugin:
    _check_family(family)
    if not model_type:
        raise InvalidArgument("model_type is required", reason="INVALID_MODEL_TYPE")
    try:
        plugin = get_plugin(model_type)
    except InvalidArgument:
        plugin = None
    if plugin is None or (family and str(plugin.family) != family):
        valid = [
            name
            for p in plugins()
            if not family or str(p.family) == family
            for name in (p.key, p.model_type)
        ]
        raise InvalidArgument(
            f"unknown model_type {model_type!r}"
            + (f" for family {family}" if family else "")
            + f"; valid: {', '.join(valid)}",
            reason="INVALID_MODEL_TYPE",
            metadata={"valid": ",".join(valid)},
        )
    return plugin


def _json_number(value: float) -> float | None:
    return None if pd.isna(value) else float(value)
