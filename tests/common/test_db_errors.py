"""Which database failures a caller is told to retry: UNAVAILABLE while the database cannot be
reached, RESOURCE_EXHAUSTED when the pool stayed full; anything else stays a bug (None)."""

from __future__ import annotations

import asyncpg
import grpc
import pytest
from sqlalchemy import exc

from mlmesh_common.db import database_error


def _wrapped(error: BaseException) -> exc.DBAPIError:
    """As SQLAlchemy raises a driver error: a DBAPIError whose `orig` is the driver's."""
    return exc.DBAPIError("SELECT 1", {}, error)


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        OSError("Multiple exceptions: [Errno 111] Connect call failed"),
        TimeoutError(),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.InterfaceError("cannot call Connection.fetch(): connection is closed"),
        _wrapped(asyncpg.exceptions.AdminShutdownError("terminating connection")),
        _wrapped(asyncpg.exceptions.CannotConnectNowError("the database system is starting up")),
        # What a connection the server terminated mid-call raised once (PostgreSQL stopped).
        asyncpg.exceptions.InternalClientError("cannot switch to state 12; another operation"),
    ],
)
def test_unreachable_database_is_unavailable_with_a_retry_hint(error):
    mapped = database_error(error)
    assert mapped is not None and mapped.code == grpc.StatusCode.UNAVAILABLE
    assert mapped.reason == "DATABASE_UNAVAILABLE" and mapped.retry_after_s


def test_a_full_pool_is_resource_exhausted():
    mapped = database_error(exc.TimeoutError("QueuePool limit of size 1 overflow 1 reached"))
    assert mapped is not None and mapped.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert mapped.reason == "DATABASE_POOL_EXHAUSTED" and mapped.retry_after_s


@pytest.mark.parametrize(
    "error",
    [
        ValueError("a bug"),
        FileNotFoundError("not the database"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        _wrapped(asyncpg.exceptions.UndefinedColumnError('column "x" does not exist')),
    ],
)
def test_other_failures_stay_internal(error):
    assert database_error(error) is None
