"""Datasets as tables indexed by time: parsing uploads (CSV or Parquet), validating them, storing
them as Parquet, and assembling a DatasetSpec into features X and the forward-return target y."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlmesh_common.errors import InvalidArgument, TooLittleData

KINDS = ("bars", "features")
MIN_ROWS = 30
_TIME_COLUMNS = ("timestamp", "date", "datetime", "time")
_PARQUET_MAGIC = b"PAR1"


def _bad(message: str, reason: str = "INVALID_DATASET", **metadata: str) -> InvalidArgument:
    return InvalidArgument(message, reason=reason, metadata=metadata)


def parse_table(data: bytes, kind: str) -> pd.DataFrame:
    """A CSV or Parquet upload as a float64 frame indexed by a sorted, unique, tz-naive UTC
    DatetimeIndex named `timestamp`."""
    if kind not in KINDS:
        raise _bad(f"kind must be one of {', '.join(KINDS)}, got {kind!r}", "INVALID_KIND")
    if not data:
        raise _bad("the upload is empty")
    try:
        if data[:4] == _PARQUET_MAGIC:
            frame = pd.read_parquet(io.BytesIO(data))
        else:
            frame = pd.read_csv(io.BytesIO(data))
    except (ValueError, UnicodeDecodeError, OSError, pd.errors.ParserError) as exc:
        raise _bad(f"not a readable CSV or Parquet table: {exc}") from None
    frame = _with_time_index(frame)
    non_numeric = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise _bad(
            f"columns must be numeric: {', '.join(map(str, non_numeric))}",
            "NON_NUMERIC_COLUMNS",
            columns=",".join(map(str, non_numeric)),
        )
    if frame.empty or not len(frame.columns):
        raise _bad("the table has no data columns or no rows")
    frame.columns = [str(c) for c in frame.columns]
    if kind == "bars":
        frame = frame.rename(columns={c: c.lower() for c in frame.columns})
        if "close" not in frame.columns:
            raise _bad("a bars dataset needs a `close` column", "MISSING_CLOSE")
    return frame.astype("float64")


def _with_time_index(frame: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(frame.index, pd.DatetimeIndex):
        names = {str(c).lower(): c for c in frame.columns}
        column = next((names[n] for n in _TIME_COLUMNS if n in names), None)
        if column is None:
            raise _bad(
                f"no time column: name one of {', '.join(_TIME_COLUMNS)} (or a datetime index)",
                "MISSING_TIMESTAMP",
            )
        try:
            index = pd.to_datetime(frame.pop(column), utc=True, format="mixed")
        except (ValueError, TypeError) as exc:
            raise _bad(f"unreadable timestamps in {column!r}: {exc}", "INVALID_TIMESTAMP") from None
        frame.index = pd.DatetimeIndex(index)
    index = frame.index
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    if index.hasnans:
        raise _bad("missing timestamps", "INVALID_TIMESTAMP")
    frame.index = index.rename("timestamp")
    if frame.index.has_duplicates:
        raise _bad("duplicate timestamps", "DUPLICATE_TIMESTAMPS")
    return frame.sort_index()


def to_parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, engine="pyarrow", index=True)
    return buffer.getvalue()


def from_parquet(data: bytes) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(data))


def epoch_ms(moment: pd.Timestamp) -> int:
    return int(moment.value // 1_000_000)


def parse_date(text: str, field: str) -> pd.Timestamp | None:
    if not text:
        return None
    try:
        moment = pd.Timestamp(text)
    except ValueError:
        raise _bad(f"{field} is not an ISO 8601 date: {text!r}", "INVALID_DATE") from None
    if moment.tz is not None:
        moment = moment.tz_convert("UTC").tz_localize(None)
    return moment


@dataclass(frozen=True)
class Assembled:
    X: pd.DataFrame
    y: pd.Series
    feature_columns: list[str]


def assemble(
    close: pd.Series,
    features: Sequence[tuple[str, pd.DataFrame]],
    *,
    target_horizon: int,
    start: pd.Timestamp | None,
    end: pd.Timestamp | None,
) -> Assembled:
    """y = close[t+h] / close[t] - 1; X = the outer join of the feature tables (a column name
    found in several tables becomes `name@label`, in the order given), restricted to
    [start, end] and inner-joined with y; rows with any NaN dropped. Fewer than 30 rows → 422."""
    if target_horizon < 1:
        raise _bad("target_horizon must be >= 1", "INVALID_HORIZON")
    if not features:
        raise _bad("feature_ids must name at least one features dataset", "MISSING_FEATURES")
    y = (close.shift(-target_horizon) / close - 1.0).rename("target")
    counts: dict[str, int] = {}
    for _, frame in features:
        for column in frame.columns:
            counts[column] = counts.get(column, 0) + 1
    renamed = [
        frame.rename(columns={c: f"{c}@{label}" for c in frame.columns if counts[c] > 1})
        for label, frame in features
    ]
    X = pd.concat(renamed, axis=1, join="outer").sort_index()
    if start is not None:
        X = X[X.index >= start]
    if end is not None:
        X = X[X.index <= end]
    joined = X.join(y, how="inner").replace([np.inf, -np.inf], np.nan).dropna()
    if len(joined) < MIN_ROWS:
        raise TooLittleData(
            f"{len(joined)} aligned rows after joining features and target; at least {MIN_ROWS}"
            " are needed",
            reason="TOO_LITTLE_DATA",
            metadata={"rows": str(len(joined)), "minimum": str(MIN_ROWS)},
        )
    columns = [c for c in joined.columns if c != "target"]
    return Assembled(joined[columns], joined["target"], columns)
