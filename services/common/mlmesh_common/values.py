"""Well-known proto values built from plain ones: Timestamps from epoch milliseconds, Structs
from dicts, and JSON Values for nullable numbers and ids."""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2


def timestamp(epoch_ms: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    set_timestamp(stamp, epoch_ms)
    return stamp


def set_timestamp(stamp: timestamp_pb2.Timestamp, epoch_ms: int) -> None:
    """Sets a Timestamp (e.g. a message's field, in place) to epoch milliseconds: from its parts,
    as FromMilliseconds does in Python per call."""
    seconds, millis = divmod(epoch_ms, 1000)
    stamp.seconds = seconds
    stamp.nanos = millis * 1_000_000


def struct(values: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


def nullable(value: float | str | None) -> struct_pb2.Value:
    """A JSON value that is null for None and for non-finite numbers (JSON has no NaN)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)
    if isinstance(value, str):
        return struct_pb2.Value(string_value=value)
    return struct_pb2.Value(number_value=value)
