"""Reachability: the connection to the fleet's Redis, whether Redis answered lately, and what a
request gets when not.

Every call to Redis has a deadline (QUEUE_TIMEOUT_S, app.fleet.store): a Redis that stops
answering with its socket open (a partition, a paused VM) is out of reach after it, as a closed
one is at once. While it is, new jobs get 503 with `Retry-After` and `/ready` says why.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.core.errors import ComfyUnavailable

log = logging.getLogger(__name__)
RETRY_AFTER_S = 5


def connect(url: str, timeout_s: float) -> Any:
    """A connection pool to Redis whose every call ends within timeout_s."""
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        # A pooled connection that a restarted Redis closed fails at once: one more try, on a new
        # connection. A call that timed out is not tried again: its deadline is spent.
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )


class Reachability:
    """Whether Redis answered lately; an outage is logged once as it begins and once as it
    ends, however many calls fail in between."""

    def __init__(self, timeout_s: float = 3.0) -> None:
        self.timeout_s = timeout_s
        self.up = True
        self.why = ""  # what the last failure was, in words a client may read

    def failed(self, error: BaseException) -> None:
        if self.up:
            log.error(
                "fleet: Redis is not reachable (%s): new jobs get 503; running jobs go on, and "
                "their events and outcomes wait for it",
                error or type(error).__name__,
            )
        self.up = False
        self.why = self.describe(error)

    def answered(self) -> None:
        if not self.up:
            log.info("fleet: Redis is reachable again")
        self.up = True
        self.why = ""

    def describe(self, error: BaseException) -> str:
        """The failure without Redis's address (a client reads it)."""
        if isinstance(error, RedisTimeoutError | TimeoutError):
            return f"it did not answer within QUEUE_TIMEOUT_S ({self.timeout_s:g}s)"
        if isinstance(error, RedisConnectionError | OSError):
            return "the connection to it failed"
        return f"it refused the call ({type(error).__name__})"

    def down_reason(self) -> str | None:
        """Why no job can be queued now, or None while Redis answers (for /ready)."""
        if self.up:
            return None
        return f"the job queue (Redis, QUEUE_URL) is not reachable: {self.why}"

    def unavailable(self, error: BaseException) -> ComfyUnavailable:
        """The 503 of a request that needed Redis and did not get it; Redis counts as down."""
        self.failed(error)
        return ComfyUnavailable(
            f"the job queue (Redis) is not reachable now: {self.why}", retry_after_s=RETRY_AFTER_S
        )
