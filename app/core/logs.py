"""Logging set-up: text for people, or one JSON object per line (LOG_FORMAT=json) for machines.

Every line logged while a job is being handled carries that job's request id: JobRunner binds
it to a context variable when the job starts, and the job's task (and every task it starts,
webhook deliveries included) inherits it, so no call site has to pass it along. The API-key
middleware binds the id of the request's key (its name when named) the same way, as `key`.
ComfyUI's own output, forwarded under the `comfyui` logger, comes out in the same format.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
api_key: ContextVar[str | None] = ContextVar("api_key", default=None)

# Attributes every LogRecord has; anything else on a record came from `extra=` and is kept.
# uvicorn's color_message repeats the message with terminal colour codes.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


def bind_request_id(value: str) -> None:
    """Tag every later log line of this task, and of the tasks it starts, with `value`."""
    request_id.set(value)


def bind_api_key(key_id: str) -> None:
    """Tag every later log line of this request (and of the jobs it starts) with its key's id:
    its name, or key-<hash> for an unnamed key; never the key."""
    api_key.set(key_id)


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", "request_id"?, "key"?, "exception"?, ...extra}`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        # Read where the line was logged: handlers run in the caller's context.
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid is not None:
            entry["request_id"] = rid
        if (key := api_key.get()) is not None:
            entry["key"] = key
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            entry.update(_access_fields(record.args))
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def _access_fields(args: tuple[Any, ...]) -> dict[str, Any]:
    # uvicorn's access line: (client address, method, path with query, HTTP version, status)
    if len(args) != 5:
        return {}
    client, method, path, _, status = args
    return {"client": client, "method": method, "path": path, "status": status}


def configure_logging(level: str, fmt: str = "text", stream: TextIO | None = None) -> None:
    """Send every logger's lines to stderr (or stream), as text or JSON, at `level` and above."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per ComfyUI call is noise
    logging.captureWarnings(True)  # Python's warnings as log lines, not bare stderr text
    if fmt == "json":
        sys.excepthook = _log_uncaught


def _log_uncaught(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    logging.getLogger("app").critical(
        "uncaught %s", kind.__name__, exc_info=(kind, error, traceback)
    )
