"""JSON values for proto fields typed google.protobuf.Value (nullable numbers and ids)."""

from __future__ import annotations

import math

from google.protobuf import struct_pb2


def nullable(value: float | str | None) -> struct_pb2.Value:
    """A JSON value that is null for None and for non-finite numbers (JSON has no NaN)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)
    if isinstance(value, str):
        return struct_pb2.Value(string_value=value)
    return struct_pb2.Value(number_value=value)
