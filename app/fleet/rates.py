"""FleetRates: each API key's requests per minute, counted across the whole fleet.

Behind a load balancer a key's requests spread over the gateways; a bucket in each gateway
would let a key make its requests_per_minute on every one of them. The bucket lives in Redis
(app.fleet.store's RATE script). While Redis is out of reach each gateway counts on its own, so
a Redis outage limits as a lone gateway would instead of refusing or waiting.
"""

from __future__ import annotations

from redis.exceptions import RedisError

from app.core.limits import KeyLimit, RateLimiter
from app.fleet.store import FleetStore


class FleetRates:
    """Requests per minute by key id, in Redis; by this gateway alone while Redis is out."""

    def __init__(self, store: FleetStore) -> None:
        self.store = store
        self.local = RateLimiter()

    async def take(self, key_id: str, limit: KeyLimit) -> float | None:
        """Take one request from the key's bucket: None when it may go, else the seconds until
        it may."""
        rate = limit.requests_per_minute
        if not rate:
            return None
        if not self.store.reachability.up:  # known out: no request waits on a connect timeout
            return self.local.take(key_id, limit)
        try:
            return await self.store.take_rate(key_id, 60.0 / rate, limit.bucket)
        except (RedisError, OSError) as e:
            self.store.reachability.failed(e)
            return self.local.take(key_id, limit)
