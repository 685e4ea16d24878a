"""Structured logs: one JSON object per line, carrying the request id of the request being served."""

import json
import logging
import re
import sys
import time
from contextvars import ContextVar

from app.errors import StartupError

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

# Fields a caller may attach with `extra=...` that the JSON line should carry.
_EXTRA = ("method", "path", "status", "duration_ms", "model", "client")


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id.get(),
        }
        line |= {k: getattr(record, k) for k in _EXTRA if hasattr(record, k)}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _one_line(value: object) -> str:
    """Control characters escaped, so a request path with %0a in it cannot forge a log line."""
    return _CONTROL.sub(lambda c: f"\\x{ord(c.group()):02x}", str(value))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        rid = request_id.get()
        extra = " ".join(f"{k}={_one_line(getattr(record, k))}" for k in _EXTRA if hasattr(record, k))
        line = f"{record.levelname:<7} {record.name} {_one_line(record.getMessage())} {extra}" + (
            f" rid={rid}" if rid else ""
        )
        # a traceback is ours (a bug), not the client's text: its lines stay as they are
        return line + "\n" + self.formatException(record.exc_info) if record.exc_info else line


class RefusalWithoutTraceback(logging.Filter):
    """uvicorn logs a failed start-up as the whole traceback. A StartupError is the operator's to fix (a
    bad provider choice, a broken model under strict start-up) and the app has already logged it in one
    line, so a traceback that ends in one is dropped; any other, a bug raised while handling a
    StartupError included, keeps its traceback."""

    _ENDING = f"{StartupError.__module__}.{StartupError.__qualname__}: "

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg
        if not (isinstance(message, str) and message.startswith("Traceback")):
            return True
        lines = [line for line in message.splitlines() if line.strip()]
        return not (lines and lines[-1].startswith(self._ENDING))


def configure(log_format: str, level: str) -> None:
    """Send the `app` loggers to stderr in the chosen format (uvicorn keeps its own loggers, less the
    traceback of a refused start-up)."""
    logger = logging.getLogger("app")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if log_format == "json" else TextFormatter())
    logger.handlers = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
    uvicorn_errors = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, RefusalWithoutTraceback) for f in uvicorn_errors.filters):
        uvicorn_errors.addFilter(RefusalWithoutTraceback())
