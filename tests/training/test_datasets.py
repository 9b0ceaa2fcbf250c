"""Dataset parsing and DatasetSpec assembly: the target, joins, collisions, ranges and limits."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from mlmesh_common.errors import InvalidArgument, TooLittleData
from mlmesh_training import datasets as ds


def frame(values: dict, start="2020-01-01", periods=60) -> pd.DataFrame:
    index = pd.date_range(start, periods=periods, freq="D", name="timestamp")
    return pd.DataFrame({k: v if np.ndim(v) else [v] * periods for k, v in values.items()}, index)


def test_parse_csv_and_parquet_give_the_same_table():
    table = frame({"close": np.arange(60.0) + 1, "volume": 5.0})
    csv = table.to_csv().encode()
    buffer = io.BytesIO()
    table.to_parquet(buffer)
    from_csv = ds.parse_table(csv, "bars")
    from_parquet = ds.parse_table(buffer.getvalue(), "bars")
    pd.testing.assert_frame_equal(from_csv, from_parquet, check_freq=False)
    assert from_csv.index.name == "timestamp" and list(from_csv.columns) == ["close", "volume"]


def test_parse_normalises_time_zone_and_order():
    csv = b"Date,Close\n2020-01-02T00:00:00+01:00,2\n2020-01-01T00:00:00+01:00,1\n"
    parsed = ds.parse_table(csv, "bars")
    assert list(parsed.index) == [
        pd.Timestamp("2019-12-31 23:00"),
        pd.Timestamp("2020-01-01 23:00"),
    ]
    assert list(parsed["close"]) == [1.0, 2.0]


@pytest.mark.parametrize(
    ("csv", "reason"),
    [
        (b"", "INVALID_DATASET"),
        (b"timestamp,close\n2020-01-01,1\n2020-01-01,2\n", "DUPLICATE_TIMESTAMPS"),
        (b"timestamp,close\nnot-a-date,1\n", "INVALID_TIMESTAMP"),
        (b"timestamp\n2020-01-01\n", "INVALID_DATASET"),
        (b"\x00\x01\x02garbage", "MISSING_TIMESTAMP"),
    ],
)
def test_bad_tables(csv, reason):
    with pytest.raises(InvalidArgument) as excinfo:
        ds.parse_table(csv, "features")
    assert excinfo.value.reason == reason


def test_assemble_target_join_collisions_and_range():
    close = pd.Series(np.arange(1.0, 61.0), frame({}).index)
    a = frame({"mom": np.arange(60.0), "vol": 1.0})
    b = frame({"vol": 2.0, "rsi": np.arange(50.0)}, start="2020-01-05", periods=50)
    result = ds.assemble(
        close,
        [("a", a), ("b", b)],
        target_horizon=2,
        start=pd.Timestamp("2020-01-03"),
        end=pd.Timestamp("2020-02-20"),
    )
    assert result.feature_columns == ["mom", "vol@a", "vol@b", "rsi"]
    # Rows need both tables (b starts 01-05), the range, and a target two days ahead.
    assert result.X.index[0] == pd.Timestamp("2020-01-05")
    assert result.X.index[-1] == pd.Timestamp("2020-02-20")
    day = result.y.index[0]
    position = close.index.get_loc(day)
    assert result.y.iloc[0] == pytest.approx(close.iloc[position + 2] / close.iloc[position] - 1)
    assert not result.X.isna().any().any()


def test_assemble_refuses_too_little_data_with_422():
    close = pd.Series(np.arange(1.0, 61.0), frame({}).index)
    with pytest.raises(TooLittleData) as excinfo:
        ds.assemble(
            close,
            [("a", frame({"x": 1.0}))],
            target_horizon=1,
            start=pd.Timestamp("2020-01-01"),
            end=pd.Timestamp("2020-01-20"),
        )
    assert excinfo.value.metadata["rows"] == "20"
    with pytest.raises(InvalidArgument):
        ds.assemble(close, [], target_horizon=1, start=None, end=None)
