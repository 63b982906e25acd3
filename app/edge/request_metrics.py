"""RequestMetrics: the ASGI middleware that counts and times every HTTP request.

Requests are labelled by the template of the route that served them (`/prompt/{id}`, never a
raw path), so the label set stays bounded however many ids and scanners come by; a request with
an accepted API key is counted for that key's name too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from typing import Any

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.keys import caller_of
from app.core.metrics import GatewayMetrics

UNMATCHED = "unmatched"  # the route label of a path no route serves (404s, scanners)

CLIENT_CLOSED = 499  # nginx's status for a request whose client left before the answer


class RouteTemplates:
    """The path template of the route that served a request, or would have served it.

    A route's own `path` lacks the prefixes of the routers that include it, so templates come
    from walking the app's routes, once per set of routes. Requests answered before routing
    (a 401, a 413) are matched against the same walk.
    """

    def __init__(self) -> None:
        # id(route) -> (route, template); holding the route keeps its id from being reused.
        self._by_route: dict[int, tuple[Any, str]] = {}

    def of(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:
            return self._match(scope)
        known = self._by_route.get(id(route))
        if known is None:
            self._by_route = {
                id(r): (r, prefix + r.path)
                for prefix, r in _flat_routes(getattr(scope.get("app"), "routes", ()))
                if isinstance(getattr(r, "path", None), str)
            }
            path = getattr(route, "path", None)
            known = self._by_route.setdefault(
                id(route), (route, path if isinstance(path, str) else UNMATCHED)
            )
        return known[1]

    def _match(self, scope: Scope) -> str:
        for prefix, candidate in _flat_routes(getattr(scope.get("app"), "routes", ())):
            path = getattr(candidate, "path", None)
            if not isinstance(path, str) or not scope["path"].startswith(prefix):
                continue
            inner = {**scope, "path": scope["path"][len(prefix) :]} if prefix else scope
            if candidate.matches(inner)[0] is not Match.NONE:
                return prefix + path
        return UNMATCHED


def _flat_routes(routes: Iterable[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    # FastAPI keeps an included router as one route holding the router it includes.
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is None:
            yield prefix, route
        else:
            context = getattr(route, "include_context", None)
            yield from _flat_routes(included.routes, prefix + getattr(context, "prefix", ""))


class RequestMetrics:
    """ASGI middleware: counts and times every HTTP request by route template and status."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self.templates = RouteTemplates()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except asyncio.CancelledError:
            status = status or CLIENT_CLOSED
            raise
        except Exception:
            status = status or 500
            raise
        finally:
            duration_s = time.perf_counter() - started
            route = self.templates.of(scope)
            caller = caller_of(scope)  # left in the scope by the key check, which runs inside
            key = caller.label if caller.id is not None else None
            self.metrics.request_ended(scope["method"], route, status or 500, duration_s, key)
