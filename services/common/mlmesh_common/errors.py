"""Domain exceptions, and the one table that maps them to gRPC status codes.

Business code raises these; the error interceptor in `mlmesh_common.server` turns them into a
`google.rpc.Status` with an `ErrorInfo` detail. Nobody calls `context.abort` by hand.
"""

from __future__ import annotations

import grpc

ERROR_DOMAIN = "mlmesh.dev"


class DomainError(Exception):
    """A failure the caller can act on. `reason` is UPPER_SNAKE, e.g. `RUN_NOT_FOUND`."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    # HTTP status the gateway must answer when it differs from Envoy's own gRPC mapping.
    http_status: int | None = None
    default_reason = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})
        # When to retry (UNAVAILABLE, RESOURCE_EXHAUSTED): a google.rpc.RetryInfo detail and,
        # through the gateway, a Retry-After header.
        self.retry_after_s = retry_after_s


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class Conflict(DomainError):
    """A concurrent change won (stale version): ABORTED, HTTP 409."""

    code = grpc.StatusCode.ABORTED
    default_reason = "CONFLICT"


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class TooLittleData(FailedPrecondition):
    """The request is well-formed but the data cannot support it: HTTP 422."""

    http_status = 422
    default_reason = "TOO_LITTLE_DATA"


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class ResourceExhausted(DomainError):
    """Refused for overload (a full pool, too many calls in flight): HTTP 429, retry later."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(DomainError):
    """A dependency (database, MLflow, Ray) cannot be reached: HTTP 503, retry later."""

    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"
