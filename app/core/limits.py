"""Per-key limits (KEY_LIMITS): requests per minute, jobs and model downloads at once, what a
key may do to the shared model cache, and the rate limiter.

KEY_LIMITS maps a key's name to its limits; `default` applies to every other key but the admin
keys (which are limited only under a name of their own):

    default: {requests_per_minute: 120, max_jobs: 4}
    acme: {requests_per_minute: 600, burst: 60, max_jobs: 16, models: download, max_downloads: 2}
    batch: {max_priority: 0}

Given as that mapping in CONFIG_FILE, or in the environment as inline YAML or JSON (a value that
starts with `{`) or as the path of a YAML file holding it. A limit that is 0 or missing is no limit
(but `max_priority`, the highest job priority the key may ask for: missing is none, 0 is one).
`models` is a grant, not a limit: missing is `none`, so a key downloads models (which may evict
others from the cache every key shares) only where the operator says so; admin keys, and every
request while API keys are off, may download and pin.

The rate is a token bucket per key id (GCRA: one number per key, the time its bucket is next
full, so a Redis-backed version later is one atomic update): `burst` requests at once (default:
a minute's worth), refilled at requests_per_minute / 60 per second. It lives in this process:
behind a load balancer each replica allows the rate on its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.core.keys import NAME_PATTERN, Caller
from app.core.priority import PRIORITY_MAX, PRIORITY_MIN

DEFAULT = "default"
PRUNE_AT = 10_000  # bucket states kept before the full ones (nothing to remember) are dropped
# What a key may do to the shared model cache: nothing; download (model URLs in its jobs, POST
# /models/download: both may evict the least recently used models); download and pin.
ModelsGrant = Literal["none", "download", "pin"]


class KeyLimit(BaseModel):
    """The limits of one key (0: none)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_minute: int = Field(0, ge=0, description="Sustained request rate")
    burst: int = Field(0, ge=0, description="Requests at once (0: requests_per_minute)")
    max_jobs: int = Field(0, ge=0, description="Jobs queued or running at once")
    models: ModelsGrant = Field(
        "none", description="Model downloads: `none`, `download`, or `pin` (download and pin)"
    )
    max_downloads: int = Field(0, ge=0, description="Model downloads it started in flight at once")
    # Unlike the others, 0 is a limit (normal priority at most): missing is none.
    max_priority: int | None = Field(
        None, ge=PRIORITY_MIN, le=PRIORITY_MAX, description="Highest job priority it may ask for"
    )

    @property
    def bucket(self) -> int:
        return self.burst or self.requests_per_minute


NO_LIMIT = KeyLimit()


def parse_key_limits(value: Any) -> dict[str, KeyLimit]:
    """KEY_LIMITS as a mapping of name -> KeyLimit; ValueError says what is wrong."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return {}
        if not text.startswith("{"):
            try:
                text = Path(text).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                raise ValueError(f"names a file that cannot be read: {reason}") from None
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"is not YAML or JSON: {e}") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError('must map key names (or "default") to limits, e.g. '
                         '{"default": {"requests_per_minute": 120, "max_jobs": 4}}')  # fmt: skip
    limits = {}
    for name, given in value.items():
        if name != DEFAULT and not (isinstance(name, str) and NAME_PATTERN.fullmatch(name)):
            raise ValueError(f"{name!r} is not a key name (1-64 of A-Za-z0-9_.-) nor default")
        if not isinstance(given, dict):
            raise ValueError(
                f"{name}: must be a mapping of requests_per_minute, burst, max_jobs, models, "
                "max_downloads, max_priority"
            )
        try:
            limits[str(name)] = KeyLimit.model_validate(given)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"{name}.{where}: {first['msg']}") from None
    return limits


def limit_for(limits: dict[str, KeyLimit], caller: Caller) -> KeyLimit:
    """The limits that apply to a caller: its name's, else `default` (never for admin keys)."""
    if caller.id is None:
        return NO_LIMIT
    if caller.named and caller.id in limits:
        return limits[caller.id]
    return NO_LIMIT if caller.admin else limits.get(DEFAULT, NO_LIMIT)


def models_grant(limits: dict[str, KeyLimit], caller: Caller) -> ModelsGrant:
    """What a caller may do to the model cache: all without keys and for admin keys, else what
    KEY_LIMITS grants its name (or `default`)."""
    if caller.id is None or caller.admin:
        return "pin"
    return limit_for(limits, caller).models


class SharedRates(Protocol):
    """Buckets that several gateways share (a fleet's, in Redis): RateLimiter.take, awaited."""

    async def take(self, key: str, limit: KeyLimit) -> float | None: ...


class RateLimiter:
    """Token buckets by key id, as GCRA keeps them: when each key's bucket is next full."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._full_at: dict[str, float] = {}

    def take(self, key: str, limit: KeyLimit) -> float | None:
        """Take one request from the key's bucket: None when it may go, else the seconds until
        it may (the bucket is empty)."""
        rate = limit.requests_per_minute
        if not rate:
            return None
        now = self._clock()
        interval_s = 60.0 / rate
        full_at = max(self._full_at.get(key, now), now) + interval_s
        over_s = full_at - now - limit.bucket * interval_s
        if over_s > 1e-9:
            return over_s
        self._full_at[key] = full_at
        if len(self._full_at) > PRUNE_AT:
            self._full_at = {k: t for k, t in self._full_at.items() if t > now}
        return None
