"""API keys: which keys the gateway accepts, and the ASGI middleware that asks for one.

With API_KEYS, API_KEYS_FILE and/or ADMIN_API_KEYS set, every HTTP request and websocket needs
`Authorization: Bearer <key>` or `X-API-Key: <key>`, except the OPEN_PATHS: the probes, the
metrics (for orchestrators and scrapers, which carry no key) and the API documentation (so a
person can read it and enter a key in its Authorize dialog). A missing or unknown key is a 401
in the contract's error shape. The middleware sits in front of the router, so routes mounted
later (the workflow endpoints) are covered without naming them.

An accepted key becomes the request's Caller (its id, whether it was named, whether it is an
admin key), left in the ASGI scope for the routes (app.core.keys.caller_of), which hand it to
the gateway's door: each key is a tenant that sees only its own jobs. The key's requests per
minute (KEY_LIMITS) are counted here, before anything else runs: past them, a 429.

Keys are compared as SHA-256 digests with `hmac.compare_digest`, against every known key, so
the time taken says nothing about how much of a key was right, nor which key it was. They are
never logged; settings errors name a key by its position, not its value. The key file is
re-read when it changes (checked at most every `reload_s`), so keys can be rotated without a
restart.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.errors import GatewayError, RateLimited, Unauthorized
from app.core.keys import Caller, KeyEntry, read_key_file, set_caller, split_entry
from app.core.limits import KeyLimit, RateLimiter, SharedRates, limit_for
from app.core.logs import bind_api_key
from app.core.metrics import MetricsHooks
from app.edge.errors import render_error

if TYPE_CHECKING:
    from app.core.settings import Settings

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset(
    {"/health", "/ready", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
OPEN_PREFIXES = ("/docs/static/",)  # Swagger UI's own files, served by the gateway
MISSING = "this endpoint needs an API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`"


Known = tuple[bytes, Caller]  # a key's SHA-256, and who presents it


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _known(entries: Iterable[str | KeyEntry], *, admin: bool = False) -> list[Known]:
    found = []
    for given in entries:
        entry = split_entry(given) if isinstance(given, str) else given
        caller = Caller(entry.id, named=entry.name is not None, admin=admin)
        found.append((_digest(entry.key), caller))
    return found


class ApiKeys:
    """The keys this gateway accepts (API_KEYS, ADMIN_API_KEYS, the contents of API_KEYS_FILE),
    each `key` or `name:key`, and who each one is."""

    def __init__(
        self,
        keys: Iterable[str | KeyEntry] = (),
        file: Path | None = None,
        *,
        admin: Iterable[str | KeyEntry] = (),
        reload_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Admin keys first: a key listed twice is an admin key.
        self._inline = _known(admin, admin=True) + _known(keys)
        self.file = file
        self.reload_s = reload_s
        self._clock = clock
        self._from_file: list[Known] = []
        self._file_stamp: tuple[int, int, int] | None = None
        self._next_check = 0.0
        self._problem: str | None = None  # why the last reload failed
        if file is not None:
            self._load_file()

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys | None:
        """The keys the settings name, or None when no key is configured (no auth)."""
        if not settings.api_keys_on:
            return None
        inline = [k.get_secret_value() for k in settings.api_keys]
        admin = [k.get_secret_value() for k in settings.admin_api_keys]
        return cls(inline, settings.api_keys_file, admin=admin)

    def names(self) -> list[str]:
        """The names the keys carry (for metrics), each once."""
        self._maybe_reload()
        found = (c.id for _, c in (*self._inline, *self._from_file) if c.named and c.id)
        return sorted(set(found))

    def __len__(self) -> int:
        self._maybe_reload()
        return len(self._inline) + len(self._from_file)

    def _load_file(self) -> None:
        assert self.file is not None
        stat = self.file.stat()
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if stamp == self._file_stamp:
            return
        keys = read_key_file(self.file)  # ValueError: keep what we had
        self._from_file = _known(keys)
        if self._file_stamp is not None:
            log.info("API_KEYS_FILE %s changed: %d key(s) now", self.file, len(keys))
        self._file_stamp = stamp

    def _maybe_reload(self) -> None:
        if self.file is None or self._clock() < self._next_check:
            return
        self._next_check = self._clock() + self.reload_s
        try:
            self._load_file()
        except (OSError, ValueError) as e:
            # A key file half-written or briefly missing during a rotation must not lock
            # everyone out, nor let everyone in: the last good keys stay in force.
            if str(e) != self._problem:  # once per problem, not every reload_s
                log.warning(
                    "API_KEYS_FILE %s not reloaded, keeping the previous keys: %s", self.file, e
                )
            self._problem = str(e)
        else:
            self._problem = None

    def identify(self, key: str) -> Caller | None:
        """Who presents `key`, or None when it is not one of ours; in time that depends neither
        on how close it came nor on which key it is (every key is compared, always)."""
        self._maybe_reload()
        presented = _digest(key)
        found: Caller | None = None
        for digest, caller in (*self._inline, *self._from_file):
            if hmac.compare_digest(presented, digest) and found is None:
                found = caller
        return found

    def accepts(self, key: str) -> bool:
        """Whether `key` is one of ours."""
        return self.identify(key) is not None

    def check(self, headers: Iterable[tuple[bytes, bytes]]) -> Caller | Unauthorized:
        """Who makes a request with these headers, or the 401 it gets."""
        presented = presented_keys(headers)
        if not presented:
            return Unauthorized(MISSING, challenge='Bearer realm="comfy-gateway"')
        # Any accepted key will do: a proxy may add an Authorization of its own.
        for _, key in presented:
            if (caller := self.identify(key)) is not None:
                return caller
        return Unauthorized(
            "the API key is not valid",
            location=f"headers.{presented[0][0]}",
            challenge='Bearer realm="comfy-gateway", error="invalid_token"',
        )


def presented_keys(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """(header name, key) for each `Authorization: Bearer <key>` and `X-API-Key: <key>`."""
    found = []
    for name, raw in headers:
        if name == b"authorization":
            scheme, _, token = raw.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                found.append(("Authorization", token.strip()))
        elif name == b"x-api-key":
            key = raw.decode("latin-1").strip()
            if key:
                found.append(("X-API-Key", key))
    return found


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
