"""One exception tree for everything the gateway answers with an error.

    GatewayError                    carries status, code, message, location, details, headers
    ├── InvalidRequest          400 the body breaks the schema or names something impossible
    │   ├── PromptRejected      400 ComfyUI refused the graph (its node_errors in details)
    │   └── NoOutputs           400 the graph has no output node
    ├── Unauthorized            401 no API key, or an unknown one (API_KEYS); WWW-Authenticate
    ├── Forbidden               403 a ComfyUI endpoint the passthrough does not open by default
    ├── NotFound                404 unknown route, or an id this gateway does not know
    ├── MethodNotAllowed        405 the route exists, the method does not
    ├── Conflict                409 the request clashes with a job (duplicate id)
    │   └── Interrupted         409 the job was interrupted on request
    ├── PayloadTooLarge         413 body over MAX_BODY_SIZE_MB
    ├── QueueFull               429 MAX_QUEUE_DEPTH reached (Retry-After)
    ├── WorkflowFailed          500 a workflow module's generate_workflow has a bug
    ├── ExecutionFailed         502 a node raised while ComfyUI executed the graph
    ├── ComfyFailed             502 ComfyUI, though up, failed on the request (its HTTP 500)
    ├── ComfyUnavailable        503 ComfyUI is down, restarting or unreachable (Retry-After)
    ├── WorkflowUnavailable     503 the workflow needs nodes or models this ComfyUI lacks
    └── PromptTimeout           504 the job ran past PROMPT_TIMEOUT_S

Every class renders as `{"error", "code", "location"?, "details"?}`; one handler does that.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class GatewayError(Exception):
    """Base class: an error with an HTTP status and a machine code."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        location: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.location = location
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message, "code": self.code}
        if self.location is not None:
            body["location"] = self.location
        if self.details is not None:
            body["details"] = self.details
        return body


class InvalidRequest(GatewayError):
    """The request is invalid; `location` says where."""

    status = 400
    code = "invalid_request"


class PromptRejected(InvalidRequest):
    """ComfyUI's validation refused the graph."""

    code = "prompt_invalid"


class NoOutputs(InvalidRequest):
    """The graph has no output node, so running it would produce nothing."""

    code = "no_outputs"


class Unauthorized(GatewayError):
    """The request carries no API key, or one this gateway does not accept."""

    status = 401
    code = "unauthorized"

    def __init__(self, message: str, *, challenge: str = "Bearer", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.headers.setdefault("WWW-Authenticate", challenge)


class Forbidden(GatewayError):
    """The request is understood but not allowed here; the message names what would allow it."""

    status = 403
    code = "forbidden"


class NotFound(GatewayError):
    """No such route or id."""

    status = 404
    code = "not_found"


class MethodNotAllowed(GatewayError):
    """The route does not take this method."""

    status = 405
    code = "method_not_allowed"


class Conflict(GatewayError):
    """The request clashes with a job already known."""

    status = 409
    code = "conflict"


class Interrupted(Conflict):
    """The job was interrupted through POST /interrupt."""

    code = "interrupted"


class PayloadTooLarge(GatewayError):
    """The body is larger than MAX_BODY_SIZE_MB."""

    status = 413
    code = "payload_too_large"


class QueueFull(GatewayError):
    """ComfyUI's queue is at MAX_QUEUE_DEPTH."""

    status = 429
    code = "queue_full"


class WorkflowFailed(GatewayError):
    """A workflow module raised (other than ValueError) or returned something not a graph."""

    status = 500
    code = "workflow_failed"


class ExecutionFailed(GatewayError):
    """A node raised while ComfyUI executed the graph."""

    status = 502
    code = "execution_failed"


class ComfyFailed(GatewayError):
    """ComfyUI answered, but with a server error of its own (a bug it hit on this graph)."""

    status = 502
    code = "comfy_error"


class ComfyUnavailable(GatewayError):
    """ComfyUI is not running, restarting, or not answering."""

    status = 503
    code = "comfy_unavailable"

    def __init__(self, message: str, *, retry_after_s: int = 5, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.headers.setdefault("Retry-After", str(retry_after_s))


class WorkflowUnavailable(GatewayError):
    """The workflow's graph needs node classes or model files this ComfyUI does not have."""

    status = 503
    code = "workflow_unavailable"


class PromptTimeout(GatewayError):
    """The job ran past PROMPT_TIMEOUT_S and was interrupted."""

    status = 504
    code = "timeout"


def error_response(error: GatewayError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def _location(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    if len(parts) > 2 and parts[0] == "convert_output":
        del parts[1]  # pydantic names the tagged-union member (jpeg); the client never wrote it
    return ".".join(parts) or "body"


def from_validation_error(exc: RequestValidationError) -> InvalidRequest:
    """One 400 naming every bad field, the first one in `location`."""
    errors = [
        {
            # a JSON syntax error's loc is a character offset; the body as a whole is at fault
            "location": "body" if e.get("type") == "json_invalid" else _location(e.get("loc", ())),
            "message": e.get("msg", "invalid"),
        }
        for e in exc.errors()
    ]
    if not errors:
        return InvalidRequest("the request body is invalid")
    first = errors[0]
    summary = "; ".join(f"{e['location']}: {e['message']}" for e in errors[:5])
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return InvalidRequest(
        f"invalid request: {summary}{more}",
        location=first["location"],
        details={"errors": errors},
    )


def install_handlers(app: FastAPI) -> None:
    """Render every error, ours or the framework's, in the contract's shape."""

    async def on_gateway_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GatewayError)
        return error_response(exc)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(from_validation_error(exc))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return error_response(NotFound(f"no route {request.method} {request.url.path}"))
        if exc.status_code == 405:
            return error_response(
                MethodNotAllowed(
                    f"{request.url.path} does not accept {request.method}",
                    headers=dict(exc.headers or {}),  # Allow: the methods it does accept
                )
            )
        body = {"error": str(exc.detail), "code": "http_error"}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(GatewayError("internal error; the gateway's log has the details"))

    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
