"""Time-series cross-validation that never trains on a label overlapping the test period:
walk-forward (rolling, expanding), purged k-fold and combinatorial purged CV (CPCV)."""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from mlmesh_common.errors import InvalidArgument, TooLittleData

METHODS = ("rolling", "expanding", "purged_kfold", "cpcv")
WALK_FORWARD = ("rolling", "expanding")
MIN_TRAIN_ROWS = 10
MIN_TEST_ROWS = 2
# Every fold holds O(n_rows) indices and costs one model fit; C(n, k) explodes quickly.
MAX_FOLDS = 1000

# A half-open row range [start, stop).
Range = tuple[int, int]


@dataclass(frozen=True, eq=False)
class Fold:
    """Sorted, read-only int64 row indices. `test_groups` names the CPCV groups a fold tests
    (its `test` may then be several separate blocks); it is empty for the other methods."""

    index: int
    train: np.ndarray
    test: np.ndarray
    test_groups: tuple[int, ...] = ()


@dataclass(frozen=True)
class CVConfig:
    """How to cut `n_rows` time-ordered rows into folds (see `split` for each method).

    `test_size` and `min_train_size` are fractions of the rows when below 1 (rounded down) and
    row counts when they are whole numbers >= 1; only walk-forward folds use them, purged
    k-fold and CPCV cut the rows into `n_splits` groups whose sizes differ by at most one.
    Walk-forward folds leave `gap + 1` rows out before each test window (gap defaults to
    target_horizon - 1); purged k-fold and CPCV purge by the horizon anyway and `gap` adds rows
    to the purge before each block. `embargo_pct` only applies to purged k-fold and CPCV.
    """

    method: str = "expanding"
    n_splits: int = 5
    test_size: float = 0.15
    min_train_size: float = 0.2
    gap: int | None = None
    embargo_pct: float = 0.0
    n_test_splits: int = 2

    def gap_rows(self, target_horizon: int) -> int:
        """The walk-forward gap: `target_horizon - 1` unless set."""
        return target_horizon - 1 if self.gap is None else self.gap

    def embargo_rows(self, n_rows: int) -> int:
        """Rows embargoed after each purged k-fold/CPCV test block: ceil(embargo_pct * n_rows)."""
        # The epsilon keeps e.g. 0.07 * 100 = 7.000000000000001 at 7 rows.
        return math.ceil(self.embargo_pct * n_rows - 1e-9)

    def n_folds(self) -> int:
        if self.method == "cpcv":
            return math.comb(self.n_splits, self.n_test_splits)
        return self.n_splits

    def validate(self, n_rows: int, target_horizon: int) -> None:
        """InvalidArgument (INVALID_CV_CONFIG) for a malformed config, TooLittleData when
        `n_rows` rows cannot give every fold MIN_TRAIN_ROWS training and MIN_TEST_ROWS test rows.
        """
        self._check_fields()
        if not _is_int(target_horizon) or target_horizon < 1:
            raise InvalidArgument(
                f"target_horizon must be an integer >= 1, got {target_horizon!r}",
                reason="INVALID_HORIZON",
            )
        if self.method in WALK_FORWARD:
            _check_walk_forward_rows(n_rows, self, target_horizon)
        else:
            _check_purged_rows(n_rows, self, target_horizon)

    def _check_fields(self) -> None:
        if self.method not in METHODS:
            raise _bad("method", f"must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not _is_int(self.n_splits) or self.n_splits < 2:
            raise _bad("n_splits", f"must be an integer >= 2, got {self.n_splits!r}")
        if self.method == "cpcv" and not (
            _is_int(self.n_test_splits) and 1 <= self.n_test_splits < self.n_splits
        ):
            raise _bad(
                "n_test_splits",
                f"must be an integer from 1 to n_splits - 1 = {self.n_splits - 1}, "
                f"got {self.n_test_splits!r}",
            )
        for name in ("test_size", "min_train_size"):
            if not _is_size(getattr(self, name)):
                raise _bad(
                    name,
                    f"must be a fraction in (0, 1) or a whole row count >= 1, "
                    f"got {getattr(self, name)!r}",
                )
        if self.gap is not None and (not _is_int(self.gap) or self.gap < 0):
            raise _bad("gap", f"must be an integer >= 0, got {self.gap!r}")
        if not (_is_real(self.embargo_pct) and 0 <= self.embargo_pct < 0.5):
            raise _bad("embargo_pct", f"must be in [0, 0.5), got {self.embargo_pct!r}")
        if self.n_folds() > MAX_FOLDS:
            raise _bad("n_splits", f"gives {self.n_folds()} folds, more than {MAX_FOLDS}")


def split(
    n_rows: int, config: CVConfig, target_horizon: int = 1, *, purge: bool = True
) -> list[Fold]:
    """The folds of `config` over rows 0..n_rows-1, validated first (see `CVConfig.validate`).

    Row i's label is the forward return close[i+h] / close[i] - 1, so it uses rows [i, i + h]
    (h = target_horizon). A training row leaks when that interval meets a test row, or, for
    rows after a test block, the interval [j, j + h] of a test row j: both would let the model
    see prices from the test period.

    - expanding: `n_splits` back-to-back test windows of `test_size` rows end at the last row;
      fold k trains on rows [0, test_start - gap - 1), where gap defaults to h - 1, so the h
      rows whose labels reach the window are left out. The first fold trains on at least
      `min_train_size` rows.
    - rolling: the same test windows; training is the `min_train_size` rows just before that
      cut-off.
    - purged_kfold: `n_splits` contiguous test blocks that partition the rows; training is
      every other row except the purge: the h (+ gap, if set) rows before a block, the h rows
      after it, whose labels overlap the block's labels, and then ceil(embargo_pct * n_rows)
      embargoed rows.
    - cpcv: `n_splits` contiguous groups; each of the C(n_splits, n_test_splits) combinations
      (in `itertools.combinations` order) is one fold's test set, purged and embargoed around
      every tested group as above.

    `purge=False` is for tests and diagnostics only: it drops gap, purge and embargo (test rows
    stay out of training) to show how much overlapping labels flatter a score.
    """
    config.validate(n_rows, target_horizon)
    if config.method in WALK_FORWARD:
        return _walk_forward(n_rows, config, target_horizon, purge)
    return [
        Fold(k, _frozen(_complement(left_out, n_rows)), _frozen(_cover(blocks)), groups)
        for k, (groups, blocks, left_out) in enumerate(
            _purged_layout(n_rows, config, target_horizon, purge)
        )
    ]


def _walk_forward(n_rows: int, config: CVConfig, horizon: int, purge: bool) -> list[Fold]:
    test_size = _rows(config.test_size, n_rows)
    window = _rows(config.min_train_size, n_rows)
    cut = config.gap_rows(horizon) + 1 if purge else 0
    first_test = n_rows - config.n_splits * test_size
    folds = []
    for k in range(config.n_splits):
        test_start = first_test + k * test_size
        train_stop = test_start - cut
        train_start = train_stop - window if config.method == "rolling" else 0
        train = np.arange(train_start, train_stop, dtype=np.int64)
        test = np.arange(test_start, test_start + test_size, dtype=np.int64)
        folds.append(Fold(k, _frozen(train), _frozen(test)))
    return folds


def group_ranges(n_rows: int, n_groups: int) -> list[Range]:
    """The row ranges of the contiguous purged k-fold/CPCV groups, in time order; their sizes
    differ by at most one."""
    edges = [g * n_rows // n_groups for g in range(n_groups + 1)]
    return list(itertools.pairwise(edges))


def _purged_layout(
    n_rows: int, config: CVConfig, horizon: int, purge: bool
) -> Iterator[tuple[tuple[int, ...], list[Range], list[Range]]]:
    """Per fold: the CPCV groups it tests (empty for purged k-fold), its test blocks, and the
    merged row ranges kept out of training (test blocks widened by purge and embargo)."""
    groups = group_ranges(n_rows, config.n_splits)
    if purge:
        before = horizon + (config.gap or 0)
        after = horizon + config.embargo_rows(n_rows)
    else:
        before = after = 0
    k = 1 if config.method == "purged_kfold" else config.n_test_splits
    for chosen in itertools.combinations(range(config.n_splits), k):
        blocks = [groups[g] for g in chosen]
        left_out = _merge([(max(a - before, 0), min(b + after, n_rows)) for a, b in blocks])
        yield (chosen if config.method == "cpcv" else ()), blocks, left_out


def _check_walk_forward_rows(n_rows: int, config: CVConfig, horizon: int) -> None:
    test_size = _rows(config.test_size, n_rows)
    window = _rows(config.min_train_size, n_rows)
    cut = config.gap_rows(horizon) + 1
    needed_train = max(window, MIN_TRAIN_ROWS)
    first_train = n_rows - config.n_splits * test_size - cut
    if config.method == "rolling" and window < MIN_TRAIN_ROWS:
        raise _too_little(
            n_rows,
            f"min_train_size gives a rolling training window of {window} rows on {n_rows} "
            f"rows; at least {MIN_TRAIN_ROWS} are needed",
        )
    if test_size < MIN_TEST_ROWS or first_train < needed_train:
        raise _too_little(
            n_rows,
            f"{n_rows} rows cannot hold {config.n_splits} {config.method} test windows of "
            f"{test_size} rows (>= {MIN_TEST_ROWS} needed) after {cut} left-out rows and a "
            f"first training window of {needed_train} rows",
        )


def _check_purged_rows(n_rows: int, config: CVConfig, horizon: int) -> None:
    if n_rows // config.n_splits < MIN_TEST_ROWS:
        raise _too_little(
            n_rows,
            f"{n_rows} rows cannot be cut into {config.n_splits} groups of at least "
            f"{MIN_TEST_ROWS} rows",
        )
    for _, _, left_out in _purged_layout(n_rows, config, horizon, purge=True):
        train_rows = n_rows - sum(b - a for a, b in left_out)
        if train_rows < MIN_TRAIN_ROWS:
            raise _too_little(
                n_rows,
                f"{n_rows} rows leave a {config.method} fold only {train_rows} training rows "
                f"after purge and embargo (>= {MIN_TRAIN_ROWS} needed)",
            )


def _merge(ranges: Sequence[Range]) -> list[Range]:
    merged: list[Range] = []
    for start, stop in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((start, stop))
    return merged


def _cover(ranges: Sequence[Range]) -> np.ndarray:
    parts = [np.arange(a, b, dtype=np.int64) for a, b in ranges]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def _complement(ranges: Sequence[Range], n_rows: int) -> np.ndarray:
    """The rows of [0, n_rows) outside the sorted, disjoint `ranges`."""
    bounds = [0, *itertools.chain.from_iterable(ranges), n_rows]
    return _cover(list(zip(bounds[::2], bounds[1::2], strict=True)))


def _frozen(rows: np.ndarray) -> np.ndarray:
    # Folds are shared between Ray tasks and metrics; nobody may reorder them in place.
    rows.setflags(write=False)
    return rows


def _rows(size: float, n_rows: int) -> int:
    """A size as rows: a fraction of n_rows (rounded down) below 1, a row count otherwise."""
    if size >= 1:
        return int(size)
    # The epsilon keeps e.g. 0.29 * 100 = 28.999999999999996 at 29 rows.
    return math.floor(size * n_rows + 1e-9)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_size(value: object) -> bool:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    size = float(value)
    return math.isfinite(size) and (0 < size < 1 or (size >= 1 and size.is_integer()))


def _bad(field: str, message: str) -> InvalidArgument:
    return InvalidArgument(
        f"invalid cv config: {field} {message}",
        reason="INVALID_CV_CONFIG",
        metadata={"field": field},
    )


def _too_little(n_rows: int, message: str) -> TooLittleData:
    return TooLittleData(message, reason="TOO_LITTLE_DATA", metadata={"rows": str(n_rows)})
