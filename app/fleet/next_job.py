"""NextJob: where a fleet worker with a free ComfyUI finds its next job (app.fleet.worker).

First the jobs of gateways that stopped heartbeating (taken over, looked for every quarter of
JOB_VISIBILITY_TIMEOUT_S, and again at once after one was found), then the line of waiting jobs:
pulled when one may wait there (the `queued` channel said so, app.fleet.signals, or the last
pull found one) and otherwise every POLL_S, for a message missed or a job queued by a gateway of
an earlier version. A gateway that took every job it accepted itself (app.fleet.queue) reads
nothing from Redis between them.
"""

from __future__ import annotations

import time

from app.fleet.signals import wait
from app.fleet.store import FleetStore
from app.fleet.stream import Pulled

POLL_S = 1.0  # the longest a gateway with room goes without looking for a waiting job


class NextJob:
    """Finds the next job for one of this gateway's free instances."""

    def __init__(self, store: FleetStore, consumer: str, visibility_ms: int, max_attempts: int):
        self.store = store
        self.consumer = consumer
        self.visibility_ms = visibility_ms
        self.max_attempts = max_attempts
        self._next_reclaim = 0.0  # monotonic: when to look for jobs of stopped gateways again
        self._next_look = 0.0  # monotonic: when to look at the waiting line unasked

    async def find(self) -> Pulled | None:
        """A job taken for this gateway, or None: none was found, or none was due to be looked
        for before a job was queued (or it was time to look). Redis errors are raised."""
        if time.monotonic() >= self._next_reclaim:  # jobs of stopped gateways first
            self._next_reclaim = time.monotonic() + self.visibility_ms / 4000
            pulled = await self.store.reclaim(self.consumer, self.visibility_ms)
            if pulled is not None:  # there may be more: look again next time round
                self._next_reclaim = 0.0
                return pulled
        queued = self.store.signals.queued
        wait_s = min(self._next_look, self._next_reclaim) - time.monotonic()
        if not queued.is_set() and wait_s > 0:
            await wait(queued, wait_s)
            return None  # the caller checks its room again
        queued.clear()  # before the pull: a job queued from now on is heard of
        pulled = await self.store.pull(self.consumer, self.max_attempts)
        if pulled is None:
            self._next_look = time.monotonic() + POLL_S
        else:
            queued.set()  # more may wait
        self.store.reachability.answered()
        return pulled
