"""The one exception of the statistics library: data that cannot support the statistic asked."""

from __future__ import annotations


class StatisticsError(ValueError):
    """A statistic is undefined on this input. `reason` is UPPER_SNAKE (e.g. `ZERO_VARIANCE`);
    `column` is the index of the offending series when one series is to blame."""

    def __init__(self, message: str, *, reason: str, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.column = column
