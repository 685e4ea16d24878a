"""Domain errors of the service, and the one place that maps them to HTTP.

The core (registry, batcher, imaging, operations) raises these; only `http_status` and the handlers in
`app.main` know about status codes.
"""

from dataclasses import dataclass

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
