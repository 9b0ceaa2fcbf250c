"""Time-series cross-validation that never leaks the future into training: rolling and
expanding walk-forward windows, purged k-fold and combinatorial purged CV (CPCV)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from mlmesh_common.errors import InvalidArgument, TooLittleData

METHODS = ("rolling", "expanding", "purged_kfold", "cpcv")
MIN_TRAIN_ROWS = 10
MIN_TEST_ROWS = 2


@dataclass(frozen=True)
class Fold:
    index: int
    train: np.ndarray
    test: np.ndarray
    # CPCV: the groups this fold tests; empty for the other methods.
    test_groups: tuple[int, ...] = field(default=())


def _bad(message: str) -> InvalidArgument:
    return InvalidArgument(f"invalid cv: {message}", reason="INVALID_CV_CONFIG")


def _rows(size: float, n_rows: int) -> int:
    """A size given as a fraction of the rows (< 1) or as a row count (>= 1)."""
    return int(size) if size >= 1 else math.floor(size * n_rows)


@dataclass(frozen=True)
class CVConfig:
    """`test_size` and `min_train_size` are fractions of the rows when below 1, row counts
    otherwise. `gap` defaults to target_horizon - 1 rows between train and test."""

    method: str = "expanding"
    n_splits: int = 5
    test_size: float = 0.15
    min_train_size: float = 0.2
    gap: int | None = None
    embargo_pct: float = 0.0
    n_test_splits: int = 2

    def gap_rows(self, target_horizon: int) -> int:
        return target_horizon - 1 if self.gap is None else self.gap

    def validate(self, n_rows: int, target_horizon: int) -> None:
        if self.method not in METHODS:
            raise _bad(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.n_splits < 2:
            raise _bad("n_splits must be >= 2")
        if self.method == "cpcv" and not 1 <= self.n_test_splits < self.n_splits:
            raise _bad("n_test_splits must be between 1 and n_splits - 1")
        for name in ("test_size", "min_train_size"):
            value = getattr(self, name)
            if not value > 0 or (value >= 1 and value != int(value)):
                raise _bad(f"{name} must be a fraction in (0, 1) or a whole row count")
        if self.gap is not None and self.gap < 0:
            raise _bad("gap must be >= 0")
        if not 0 <= self.embargo_pct < 0.5:
            raise _bad("embargo_pct must be in [0, 0.5)")
        if target_horizon < 1:
            raise _bad("target_horizon must be >= 1")
        folds = split(n_rows, self, target_horizon, _validated=True)
        min_train = MIN_TRAIN_ROWS
        if self.method in ("rolling", "expanding"):
            min_train = max(min_train, _rows(self.min_train_size, n_rows))
        short = [f.index for f in folds if len(f.train) < min_train or len(f.test) < MIN_TEST_ROWS]
        if short:
            raise TooLittleData(
                f"{n_rows} rows are too few for {self.n_splits} {self.method} folds: every fold "
                f"needs {min_train} training and {MIN_TEST_ROWS} test rows",
                reason="TOO_LITTLE_DATA",
                metadata={"rows": str(n_rows)},
            )


def split(
    n_rows: int,
    config: CVConfig,
    target_horizon: int = 1,
    *,
    purge: bool = True,
    _validated: bool = False,
) -> list[Fold]:
    """The folds of `config` over rows 0..n_rows-1, where row i's label is close[i+h] / close[i]:
    no training label resolves after a test block starts (i + h <= its first row).

    `purge=False` keeps training rows whose labels overlap a test block: a diagnostic that
    shows how much such leakage flatters a score; training never uses it.
    """
    if not _validated:
        config.validate(n_rows, target_horizon)
    if config.method in ("rolling", "expanding"):
        return _walk_forward(n_rows, config, target_horizon, purge)
    return _purged(n_rows, config, target_horizon, purge)


def _walk_forward(n_rows: int, config: CVConfig, horizon: int, purge: bool) -> list[Fold]:
    test_size = max(_rows(config.test_size, n_rows), 1)
    window = max(_rows(config.min_train_size, n_rows), 1)
    gap = config.gap_rows(horizon) if purge else 0
    folds = []
    first_test = n_rows - config.n_splits * test_size
    for k in range(config.n_splits):
        test_start = first_test + k * test_size
        train_end = test_start - gap  # exclusive
        train_start = max(train_end - window, 0) if config.method == "rolling" else 0
        train = np.arange(max(train_start, 0), max(train_end, 0), dtype=np.int64)
        test = np.arange(max(test_start, 0), test_start + test_size, dtype=np.int64)
        folds.append(Fold(k, train, test))
    return folds


def _purged(n_rows: int, config: CVConfig, horizon: int, purge: bool) -> list[Fold]:
    groups = np.array_split(np.arange(n_rows, dtype=np.int64), config.n_splits)
    embargo = math.ceil(config.embargo_pct * n_rows)
    extra_gap = config.gap or 0
    if config.method == "purged_kfold":
        tested = [(g,) for g in range(config.n_splits)]
    else:
        tested = list(itertools.combinations(range(config.n_splits), config.n_test_splits))
    folds = []
    for k, chosen in enumerate(tested):
        test = np.concatenate([groups[g] for g in chosen])
        keep = np.ones(n_rows, dtype=bool)
        keep[test] = False
        if purge:
            for g in chosen:
                start, end = int(groups[g][0]), int(groups[g][-1])
                # Row i's label is close[i+h] / close[i]: any i > start - h resolves after the
                # block starts, the same bound the walk-forward gap (h - 1 rows) keeps.
                keep[max(start - (horizon - 1) - extra_gap, 0) : start] = False
                keep[end + 1 : end + 1 + embargo] = False
        train = np.flatnonzero(keep).astype(np.int64)
        folds.append(Fold(k, train, test, tuple(chosen) if config.method == "cpcv" else ()))
    return folds
