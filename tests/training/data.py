"""S&P 500 demo data for training tests: the demo's daily features and the next-day return,
offline (the prices ship with the `arch` package)."""

from __future__ import annotations

from functools import cache

import pandas as pd

from tools.demo_training import sp500_tables

ROWS = 1500


@cache
def _frame(rows: int) -> pd.DataFrame:
    bars, features = sp500_tables(rows + 40)
    target = (bars["close"].shift(-1) / bars["close"] - 1).rename("target")
    return features.join(target, how="inner").dropna().iloc[-rows:]


def sp500_bars(rows: int = ROWS) -> pd.DataFrame:
    """The daily bars (open, high, low, close, volume) behind `sp500_features(rows)`."""
    return sp500_tables(rows + 40)[0]


def sp500_features(rows: int = ROWS) -> tuple[pd.DataFrame, pd.Series]:
    """(X, y): features known at each day's close, and the return of the following day."""
    frame = _frame(rows)
    return frame.drop(columns="target").copy(), frame["target"].copy()


def train_test_split(
    fraction: float = 0.8, rows: int = ROWS
) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series]:
    """Time-ordered split: the first `fraction` of rows to train on, the rest to predict."""
    X, y = sp500_features(rows)
    cut = int(len(X) * fraction)
    return X.iloc[:cut], y.iloc[:cut], X.iloc[cut:], y.iloc[cut:]
