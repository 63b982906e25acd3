"""API keys: which keys the gateway accepts, and who presents each.

Keys are compared as SHA-256 digests with `hmac.compare_digest`, against every known key, so
the time taken says nothing about how much of a key was right, nor which key it was. They are
never logged; settings errors name a key by its position, not its value. The key file is
re-read when it changes (checked at most every `reload_s`), so keys can be rotated without a
restart. The middleware that asks for a key is app.edge.auth.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from app.core.errors import Unauthorized
from app.core.keys import Caller, KeyEntry, read_key_file, split_entry

if TYPE_CHECKING:
    from app.core.settings import Settings

log = logging.getLogger(__name__)

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
