"""API keys: which keys the gateway accepts, and the ASGI middleware that asks for one.

With API_KEYS and/or API_KEYS_FILE set, every HTTP request and websocket needs
`Authorization: Bearer <key>` or `X-API-Key: <key>`, except the OPEN_PATHS: the probes, the
metrics (for orchestrators and scrapers, which carry no key) and the API documentation (so a
person can read it and enter a key in its Authorize dialog). A missing or unknown key is a 401
in the contract's error shape. The middleware sits in front of the router, so routes mounted
later (the workflow endpoints) are covered without naming them.

Keys are compared as SHA-256 digests with `hmac.compare_digest`, against every known key, so
the time taken says nothing about how much of a key was right. They are never logged; settings
errors name a key by its position, not its value. The key file is re-read when it changes
(checked at most every `reload_s`), so keys can be rotated without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.errors import Unauthorized
from app.core.keys import read_key_file
from app.edge.errors import render_error

if TYPE_CHECKING:
    from app.core.settings import Settings

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset(
    {"/health", "/ready", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
OPEN_PREFIXES = ("/docs/static/",)  # Swagger UI's own files, served by the gateway
MISSING = "this endpoint needs an API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    """The keys this gateway accepts: API_KEYS and the contents of API_KEYS_FILE."""

    def __init__(
        self,
        keys: Iterable[str] = (),
        file: Path | None = None,
        *,
        reload_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inline = [_digest(k) for k in keys]
        self.file = file
        self.reload_s = reload_s
        self._clock = clock
        self._from_file: list[bytes] = []
        self._file_stamp: tuple[int, int, int] | None = None
        self._next_check = 0.0
        self._problem: str | None = None  # why the last reload failed
        if file is not None:
            self._load_file()

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys | None:
        """The keys the settings name, or None when no key is configured (no auth)."""
        inline = [k.get_secret_value() for k in settings.api_keys]
        if not inline and settings.api_keys_file is None:
            return None
        return cls(inline, settings.api_keys_file)

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
        self._from_file = [_digest(k) for k in keys]
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

    def accepts(self, key: str) -> bool:
        """Whether `key` is one of ours, in time that does not depend on how close it came."""
        self._maybe_reload()
        presented = _digest(key)
        accepted = False
        for known in (*self._inline, *self._from_file):
            accepted |= hmac.compare_digest(presented, known)
        return accepted

    def check(self, headers: Iterable[tuple[bytes, bytes]]) -> Unauthorized | None:
        """The 401 a request with these headers gets, or None if it carries an accepted key."""
        presented = presented_keys(headers)
        if not presented:
            return Unauthorized(MISSING, challenge='Bearer realm="comfy-gateway"')
        # Any accepted key will do: a proxy may add an Authorization of its own.
        for _, key in presented:
            if self.accepts(key):
                return None
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
    """ASGI middleware: refuses HTTP requests and websockets without an accepted key."""

    def __init__(
        self, app: ASGIApp, keys: ApiKeys, open_paths: frozenset[str] = OPEN_PATHS
    ) -> None:
        self.app = app
        self.keys = keys
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope["path"].removeprefix(scope.get("root_path", "")) or "/"
        if path in self.open_paths or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        error = self.keys.check(scope["headers"])
        if error is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "http" or "websocket.http.response" in scope.get("extensions", {}):
            await render_error(scope, error)(scope, receive, send)
        else:
            await send({"type": "websocket.close", "code": 1008, "reason": error.code})


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
