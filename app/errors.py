"""Domain errors of the service, and the one place that maps them to HTTP.

The core (registry, batcher, imaging, operations) raises these; only `http_status` and the handlers in
`app.main` know about status codes.
"""

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from starlette.responses import JSONResponse


class ServiceError(Exception):
    """A failure a client can be told about: a stable `code`, a message and the offending field."""

    code = "internal_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class ModelNotFound(ServiceError):
    code = "model_not_found"


class OperationNotSupported(ServiceError):
    code = "operation_not_supported"


class InvalidInput(ServiceError):
    code = "invalid_input"


class Overloaded(ServiceError):
    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotReady(ServiceError):
    code = "not_ready"


class PayloadTooLarge(ServiceError):
    code = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    code = "unsupported_media_type"


class Unauthorized(ServiceError):
    code = "unauthorized"


class InferenceFailed(ServiceError):
    """The runtime failed on a batch; every request in that batch receives this."""

    code = "inference_failed"


class StartupError(RuntimeError):
    """The service refuses to start (bad provider, strict start-up with a broken model)."""


_STATUS: dict[type[ServiceError], int] = {
    ModelNotFound: 404,
    OperationNotSupported: 404,
    InvalidInput: 422,
    Overloaded: 429,
    NotReady: 503,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    Unauthorized: 401,
    InferenceFailed: 500,
}


def http_status(error: ServiceError, *, v2: bool = False) -> int:
    """The HTTP status code of a domain error (500 for anything unmapped). The v2 protocol answers
    a bad request with 400 where v1 says 422."""
    if v2 and isinstance(error, InvalidInput):
        return 400
    for cls in type(error).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 500


@dataclass(frozen=True)
class ErrorBody:
    """The JSON error shape of /v1 and the ops routes: {"error": {"code", "message", "field"}}."""

    code: str
    message: str
    field: str | None = None

    def v1(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}

    def v2(self) -> dict[str, str]:
        """The Open Inference Protocol's shape: {"error": "<message>"}."""
        return {"error": self.message}


def error_response(error: ServiceError, path: str) -> JSONResponse:
    """The one mapping from a domain error to an HTTP response; /v2 paths get the protocol's shape."""
    body = ErrorBody(error.code, error.message, error.field)
    headers = {"Retry-After": str(error.retry_after_s)} if isinstance(error, Overloaded) else None
    if isinstance(error, Unauthorized):
        headers = {"WWW-Authenticate": "Bearer"}
    v2 = path.startswith("/v2")
    content = body.v2() if v2 else body.v1()
    return JSONResponse(content, status_code=http_status(error, v2=v2), headers=headers)


# The error shapes as OpenAPI schemas, so a client (or a fuzzer checking conformance) knows every answer.
class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    """/v1 and the operational routes."""

    error: ErrorDetail


class V2ErrorResponse(BaseModel):
    """The Open Inference Protocol's error shape."""

    error: str


_WHEN = {
    400: "Bad request (v2: an invalid tensor, shape or field)",
    401: "Missing or wrong API key",
    404: "Unknown model, graph or operation",
    413: "Body, image or request over a limit",
    415: "Unsupported body or image type",
    422: "Invalid input; `field` names it",
    429: "Overloaded; retry after Retry-After seconds",
    500: "Inference failed",
    503: "Model unavailable or service starting",
}


def error_responses(*statuses: int, v2: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the given error statuses, in the v1 or v2 shape (429 declares Retry-After)."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        model = V2ErrorResponse if v2 else ErrorResponse
        spec: dict[str, Any] = {"model": model, "description": _WHEN[status]}
        if status == 429:
            spec["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds"}}
        out[status] = spec
    return out
