"""Errors over HTTP: every error, ours or the framework's, rendered in the contract's shape.

The error tree itself (app.core.errors) knows nothing of HTTP frameworks; this module turns its
errors, FastAPI's validation errors and Starlette's 404/405 into `{"error", "code", ...}`.
A facade whose clients expect another shape (the Comfy API v2's `{"error": {"code", ...}}`)
registers a renderer for its path prefix with `add_error_style`; every error under that prefix,
from a route, the router (404, 405) or a middleware (401, 413), then renders that way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from app.core.errors import GatewayError, InvalidRequest, MethodNotAllowed, NotFound

log = logging.getLogger(__name__)


ErrorRenderer = Callable[[GatewayError], Response]


def error_response(error: GatewayError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def add_error_style(app: FastAPI, prefix: str, render: ErrorRenderer) -> None:
    """Render errors of requests under `prefix` (`/api/v2/`) with `render`, not our shape."""
    styles: list[tuple[str, ErrorRenderer]] = getattr(app.state, "error_styles", [])
    app.state.error_styles = [*styles, (prefix, render)]


def render_error(scope: Scope, error: GatewayError) -> Response:
    """The error in the shape its path's clients expect (the contract's, unless a facade's)."""
    state: Any = getattr(scope.get("app"), "state", None)
    path: str = scope.get("path", "")
    styles: list[tuple[str, ErrorRenderer]] = getattr(state, "error_styles", [])
    for prefix, render in styles:
        if path.startswith(prefix) or path == prefix.rstrip("/"):
            return render(error)
    return error_response(error)


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

    async def on_gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return render_error(request.scope, exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return render_error(request.scope, from_validation_error(exc))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            error = NotFound(f"no route {request.method} {request.url.path}")
            return render_error(request.scope, error)
        if exc.status_code == 405:
            return render_error(
                request.scope,
                MethodNotAllowed(
                    f"{request.url.path} does not accept {request.method}",
                    headers=dict(exc.headers or {}),  # Allow: the methods it does accept
                ),
            )
        body = {"error": str(exc.detail), "code": "http_error"}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        error = GatewayError("internal error; the gateway's log has the details")
        return render_error(request.scope, error)

    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
