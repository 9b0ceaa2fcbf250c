"""AutoML leaderboards: candidate plugins evaluated under one cross-validation, in parallel on
Ray, optionally tuned first, optionally joined by an ensemble of the best; ranked in the
metric's direction. A failing candidate is a failed row, never a failed leaderboard."""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import ray

from mlmesh_training import engine
from mlmesh_training.engine import CVResult, FoldEvaluation
from mlmesh_training.plugins import get_plugin
from mlmesh_training.plugins.base import Family
from mlmesh_training.tuning import EvalData, StudySpec, Tuner, check_space, open_storage

ENSEMBLE_KEY = "ens.mean"
CANDIDATE_RETRIES = 2


@dataclass(frozen=True)
class Row:
    plugin_key: str
    params: dict[str, Any]
    status: str = "SUCCEEDED"  # or FAILED
    score: float | None = None
    metrics: dict[str, float] | None = None
    fit_time_s: float = 0.0
    error: str = ""
    n_trials: int = 0
    rank: int = 0
    # The stitched out-of-sample P&L (with tuning: the best trial's) and its annualized Sharpe
    # and PSR(0); empty without a backtest.
    oos_return: list[float] = field(default_factory=list)
    oos_sharpe: float | None = None
    oos_psr: float | None = None


@dataclass(frozen=True)
class Leaderboard:
    rows: list[Row]
    metric: str
    direction: str


def rank_by_score(rows: list[Row], scores: dict[str, float]) -> list[Row]:
    """Successful rows by `scores` (plugin key -> e.g. DSR), highest first, rows without one
    after them (ties by plugin key), ranked from 1; failed rows last with rank 0."""
    ok = [r for r in rows if r.rank]
    ok.sort(
        key=lambda r: (r.plugin_key not in scores, -scores.get(r.plugin_key, 0.0), r.plugin_key)
    )
    failed = [r for r in rows if not r.rank]
    return [replace(r, rank=i) for i, r in enumerate(ok, start=1)] + failed


def rank(rows: list[Row], direction: str) -> list[Row]:
    """Successful rows by score in `direction` (ties by plugin key), ranked from 1; failed rows
    after them with rank 0."""
    sign = -1.0 if direction == "maximize" else 1.0
    scored = [r for r in rows if r.status == "SUCCEEDED" and _finite(r.score)]
    scored.sort(key=lambda r: (sign * r.score, r.plugin_key))
    failed = sorted((r for r in rows if r not in scored), key=lambda r: r.plugin_key)
    ranked = [replace(r, rank=i) for i, r in enumerate(scored, start=1)]
    return ranked + [replace(r, rank=0) for r in failed]


class AutoML:
    def __init__(
        self,
        data: EvalData,
        metric: str,
        direction: str,
        seed: int,
        max_parallel: int,
    ) -> None:
        self._data = data
        self._metric = metric
        self._direction = direction
        self._seed = seed
        self._slots = asyncio.Semaphore(max_parallel or max(1, engine.cluster_cpus()))
        # Candidate studies are throwaway: in memory, not in the training database.
        self._tuner = Tuner(open_storage(None))

    async def run(
        self, candidates: dict[str, dict[str, Any]], tune_trials: int, top_k: int, progress=None
    ) -> Leaderboard:
        total = len(candidates) + (1 if top_k >= 2 else 0)
        done = 0

        async def one(plugin_key: str, params: dict[str, Any]) -> Row:
            nonlocal done
            if tune_trials > 0:
                row = await self._tune(plugin_key, params, tune_trials)
            else:
                row = await self._evaluate(plugin_key, params)
            done += 1
            if progress is not None:
                await progress(done, total, f"{done}/{total} candidates evaluated")
            return row

        rows = list(await asyncio.gather(*(one(k, p) for k, p in candidates.items())))
        ranked = rank(rows, self._direction)
        members = [
            r for r in ranked if r.rank and get_plugin(r.plugin_key).family is not Family.ENSEMBLE
        ]
        if top_k >= 2 and len(members) >= 2:
            chosen = {r.plugin_key: r.params for r in members[:top_k]}
            params = get_plugin(ENSEMBLE_KEY).check_params({"members": chosen})
            ranked = rank([*ranked, await one(ENSEMBLE_KEY, params)], self._direction)
        return Leaderboard(ranked, self._metric, self._direction)

    async def _evaluate(self, plugin_key: str, params: dict[str, Any]) -> Row:
        folds: list[FoldEvaluation] = []
        try:
            async with self._slots:
                stream = engine.evaluate(
                    plugin_key,
                    params,
                    self._seed,
                    self._data.X_ref,
                    self._data.y_ref,
                    self._data.folds,
                    train_scale=self._data.train_scale,
                    # A candidate's CV is deterministic: one whose worker died (a node lost, a
                    # native crash) is simply run again before its row counts as FAILED.
                    retries=CANDIDATE_RETRIES,
                )
                async with contextlib.aclosing(stream):
                    async for evaluation in stream:
                        folds.append(evaluation)
            tested = {}
            if self._data.backtester is not None:
                predictions = [f.predictions for f in folds]
                tested = await asyncio.to_thread(self._data.backtester.record, predictions)
        except ray.exceptions.RayTaskError as error:
            return Row(plugin_key, params, status="FAILED", error=engine.task_error(error))
        except ray.exceptions.RayError as error:
            return Row(plugin_key, params, status="FAILED", error=f"{type(error).__name__}")
        summary = CVResult([f.score for f in folds]).summary
        return Row(
            plugin_key,
            params,
            score=summary[self._metric],
            metrics=summary,
            fit_time_s=folds[-1].finished - folds[0].started,
            oos_return=tested.get("oos_return", []),
            oos_sharpe=tested.get("oos_sharpe"),
            oos_psr=tested.get("oos_psr"),
        )

    async def _tune(self, plugin_key: str, params: dict[str, Any], n_trials: int) -> Row:
        plugin = get_plugin(plugin_key)
        space = check_space(plugin, {}, params)
        if not space:
            return await self._evaluate(plugin_key, plugin.check_params(params))
        spec = StudySpec(
            name=f"automl-{uuid.uuid4().hex}",
            plugin_key=plugin_key,
            space=space,
            fixed=params,
            n_trials=n_trials,
            metric=self._metric,
            direction=self._direction,
            seed=self._seed,
        )
        result = await self._tuner.run(spec, self._data, slots=self._slots)
        best = result.best
        if best is None:
            errors = [t.error for t in result.trials if t.error]
            return Row(
                plugin_key,
                params,
                status="FAILED",
                error=f"no trial completed: {errors[0] if errors else 'timed out'}",
                n_trials=result.n_finished,
            )
        return Row(
            plugin_key,
            plugin.check_params(best.params),
            score=best.value,
            metrics=best.metrics,
            fit_time_s=best.duration_s,
            n_trials=result.n_finished,
            oos_return=best.oos_return,
            oos_sharpe=best.oos_sharpe,
            oos_psr=best.oos_psr,
        )


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
