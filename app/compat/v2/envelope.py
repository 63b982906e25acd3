"""The Comfy API v2's wire conventions: its error envelope, JSON, times and absolute URLs.

Errors are `{"error": {"code", "message", "details"}}` with comfy-api-proxy's codes. The gateway's
own errors raised under /api/v2 (by the door, the router or a middleware) render this way too,
through `render` (registered with app.edge.errors.add_error_style); `details` then carries the
gateway's `location` where it has one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from app.core.errors import (
    ComfyUnavailable,
    Forbidden,
    GatewayError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    QueueFull,
    Unauthorized,
)

F = TypeVar("F", bound=Callable[..., Any])

PREFIX = "/api/v2"
RETENTION = timedelta(hours=24)  # what `expires_at` and `url_expires_at` announce, as the proxy

# The v2 code of each of the gateway's errors, most specific first.
CODES: tuple[tuple[type[GatewayError], str], ...] = (
    (NotFound, "not_found"),
    (Unauthorized, "unauthorized"),
    (Forbidden, "forbidden"),
    (MethodNotAllowed, "method_not_allowed"),
    (PayloadTooLarge, "payload_too_large"),
    (QueueFull, "queue_full"),
    (ComfyUnavailable, "upstream_unreachable"),
    (InvalidRequest, "invalid_request"),
)


class V2JSON(JSONResponse):
    """JSON as comfy-api-proxy (aiohttp) labels it."""

    media_type = "application/json; charset=utf-8"


def error(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> V2JSON:
    body = {"error": {"code": code, "message": message, "details": details or None}}
    return V2JSON(body, status_code=status, headers=headers)


def render(failure: GatewayError) -> Response:
    """A gateway error in the v2 envelope (the style of every error under /api/v2)."""
    code = next((c for cls, c in CODES if isinstance(failure, cls)), failure.code)
    details = dict(failure.details or {})
    if failure.location is not None:
        details["location"] = failure.location
    return error(failure.status, code, failure.message, details, failure.headers)


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    # `+00:00` and microseconds, as datetime.isoformat() writes them (the proxy's form).
    return moment.isoformat()


def base_url(request: Request) -> str:
    """Where the client reached us, for the absolute URLs in bodies (from Host, as the proxy)."""
    return f"{request.url.scheme}://{request.url.netloc}"


def get_and_head(
    router: APIRouter, path: str, response_class: type[Response] = V2JSON
) -> Callable[[F], F]:
    """GET and HEAD (documented once), as aiohttp serves HEAD for every GET route."""

    def register(handler: F) -> F:
        router.head(path, include_in_schema=False, response_class=response_class)(handler)
        router.get(path, response_class=response_class)(handler)
        return handler

    return register
