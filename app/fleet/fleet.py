"""Fleet: this gateway's part in a fleet (QUEUE_URL set): accepting into the shared queue,
running jobs from it, and keeping an eye on Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis.exceptions import RedisError

from app.core.addresses import AddressPolicy
from app.core.settings import Settings
from app.fleet.queue import FleetQueue
from app.fleet.rates import FleetRates
from app.fleet.store import FleetStore
from app.fleet.worker import FleetWorker
from app.jobs.runner import JobRunner
from app.jobs.scheduler import Scheduler
from app.jobs.webhooks import WebhookSender

log = logging.getLogger(__name__)
CHECK_S = 2.0  # how often Redis is pinged (and the queue's length read) for /ready


class Fleet:
    """The store, the accepting queue and the worker of one gateway of a fleet."""

    def __init__(
        self,
        settings: Settings,
        runner: JobRunner,
        scheduler: Scheduler[Any],
        sender: WebhookSender,
        addresses: AddressPolicy,
    ) -> None:
        assert settings.queue_url is not None
        self.store = FleetStore(
            settings.queue_url.get_secret_value(),
            settings.queue_name,
            ttl_s=settings.job_history_ttl_s,
            timeout_s=settings.queue_timeout_s,
            history_max=settings.fleet_history_max,
            history_max_bytes=int(settings.fleet_history_max_mb * 2**20),
            age_step_s=settings.queue_age_step_s,
        )
        self.queue = FleetQueue(self.store, addresses, sender)
        self.rates = FleetRates(self.store)
        self.worker = FleetWorker(self.store, runner, scheduler, sender, settings)
        self.depth = 0  # jobs queued or running in the fleet, as of the last check
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Join the fleet: the consumer group exists, jobs are pulled, Redis is watched."""
        try:
            await self.store.ensure_group()
        except (RedisError, OSError) as e:
            self.store.reachability.failed(e)
        self._watch = asyncio.create_task(self._check(), name="fleet-check")
        self.store.signals.start()
        self.worker.start()

    @property
    def reachable(self) -> bool:
        return self.store.reachability.up

    def down_reason(self) -> str | None:
        """Why no job can be queued now (Redis out of reach, and how), or None."""
        return self.store.reachability.down_reason()

    async def _check(self) -> None:
        """Ping Redis (for /ready and new jobs) and read the queue's length."""
        while True:
            try:
                if not self.reachable:
                    await self.store.ensure_group()  # Redis may have come back empty
                self.depth = int(await self.store.redis.xlen(self.store.stream))
            except (RedisError, OSError) as e:
                self.store.reachability.failed(e)
            else:
                self.store.reachability.answered()
            await asyncio.sleep(CHECK_S)

    async def close(self, timeout_s: float) -> None:
        """Leave the fleet: webhooks of jobs interrupted here go out (at most timeout_s), then
        the worker and the connections stop."""
        await self.queue.drain(timeout_s)
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self.worker.close()
        await self.store.aclose()
