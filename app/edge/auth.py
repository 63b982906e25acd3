"""The ASGI middleware that asks every request for an API key (app.edge.api_keys: which keys
the gateway accepts), and the keys' place in the OpenAPI document.

With API_KEYS, API_KEYS_FILE and/or ADMIN_API_KEYS set, every HTTP request and websocket needs
`Authorization: Bearer <key>` or `X-API-Key: <key>`, except the OPEN_PATHS: the probes, the
metrics (for orchestrators and scrapers, which carry no key) and the API documentation (so a
person can read it and enter a key in its Authorize dialog); and the fleet's files endpoint,
which asks for the fleet's secret instead, and which no key opens. A missing or unknown key is a 401
in the contract's error shape. The middleware sits in front of the router, so routes mounted
later (the workflow endpoints) are covered without naming them.

An accepted key becomes the request's Caller (its id, whether it was named, whether it is an
admin key), left in the ASGI scope for the routes (app.core.keys.caller_of), which hand it to
the gateway's door: each key is a tenant that sees only its own jobs. The key's requests per
minute (KEY_LIMITS) are counted here, before anything else runs: past them, a 429.
"""

from __future__ import annotations

import math
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.errors import GatewayError, RateLimited, Unauthorized
from app.core.keys import Caller, set_caller
from app.core.limits import KeyLimit, RateLimiter, SharedRates, limit_for
from app.core.logs import bind_api_key
from app.core.metrics import MetricsHooks
from app.edge.api_keys import ApiKeys
from app.edge.errors import render_error
from app.fleet.shelf import FILES_PATH

OPEN_PATHS = frozenset(
    {"/health", "/ready", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
# Swagger UI's own files, served by the gateway; and the fleet's internal files endpoint, which
# asks for the fleet's secret instead of a key (app.routes.fleet_files).
OPEN_PREFIXES = ("/docs/static/", FILES_PATH)


class ApiKeyAuth:
    """ASGI middleware: refuses HTTP requests and websockets without an accepted key, and those
    past their key's requests per minute; hands the rest on with their Caller in the scope."""

    def __init__(
        self,
        app: ASGIApp,
        keys: ApiKeys,
        open_paths: frozenset[str] = OPEN_PATHS,
        *,
        limits: dict[str, KeyLimit] | None = None,
        metrics: MetricsHooks | None = None,
        limiter: RateLimiter | None = None,
        shared: SharedRates | None = None,
    ) -> None:
        self.app = app
        self.keys = keys
        self.open_paths = open_paths
        self.limits = limits or {}
        self.metrics = metrics or MetricsHooks()
        self.limiter = limiter or RateLimiter()
        self.shared = shared  # a fleet's buckets: a key's rate counts on every gateway at once

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope["path"].removeprefix(scope.get("root_path", "")) or "/"
        if path in self.open_paths or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        found = self.keys.check(scope["headers"])
        if isinstance(found, Unauthorized):
            await deny(scope, receive, send, found)
            return
        set_caller(scope, found)
        assert found.id is not None
        bind_api_key(found.id)
        if (refused := await self.over_rate(found)) is not None:
            await deny(scope, receive, send, refused)
            return
        await self.app(scope, receive, send)

    async def over_rate(self, caller: Caller) -> RateLimited | None:
        """The 429 of a request past its key's requests per minute, or None."""
        assert caller.id is not None
        limit = limit_for(self.limits, caller)
        if self.shared is not None:
            wait_s = await self.shared.take(caller.id, limit)
        else:
            wait_s = self.limiter.take(caller.id, limit)
        if wait_s is None:
            return None
        self.metrics.key_limited(caller.label, "requests_per_minute")
        retry_s = max(math.ceil(wait_s), 1)
        return RateLimited(
            f"this API key made more requests than its KEY_LIMITS allow "
            f"({limit.requests_per_minute} per minute, {limit.bucket} at once); "
            f"retry after {retry_s} s",
            details={
                "limit": "requests_per_minute",
                "requests_per_minute": limit.requests_per_minute,
                "burst": limit.bucket,
            },
            headers={"Retry-After": str(retry_s)},
        )


async def deny(scope: Scope, receive: Receive, send: Send, error: GatewayError) -> None:
    """Refuse a request: an error response, or a websocket closed before its handshake."""
    if scope["type"] == "http" or "websocket.http.response" in scope.get("extensions", {}):
        await render_error(scope, error)(scope, receive, send)
    else:
        code = 1013 if error.status == 429 else 1008  # 1013: try again later
        await send({"type": "websocket.close", "code": code, "reason": error.code})


def document_api_keys(spec: dict[str, Any], open_paths: frozenset[str] = OPEN_PATHS) -> None:
    """Declare both key headers in an OpenAPI document, so Swagger UI offers Authorize.

    Every operation outside open_paths requires one of them and documents the 401.
    """
    spec.setdefault("components", {}).setdefault("securitySchemes", {}).update(
        {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "`Authorization: Bearer <key>`, a key from API_KEYS",
            },
            "apiKey": {
                "type": "apiKey",
                "in": "header",
                "name": "X-API-Key",
                "description": "`X-API-Key: <key>`, the same keys",
            },
        }
    )
    unauthorized = {
        "description": "No API key, or one this gateway does not accept",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }
    has_error_schema = "ErrorResponse" in spec["components"].get("schemas", {})
    for path, operations in spec.get("paths", {}).items():
        if path in open_paths:
            continue
        for operation in operations.values():
            operation["security"] = [{"bearer": []}, {"apiKey": []}]
            if has_error_schema:
                operation.setdefault("responses", {}).setdefault("401", unauthorized)
            else:
                operation.setdefault("responses", {}).setdefault(
                    "401", {"description": unauthorized["description"]}
                )
