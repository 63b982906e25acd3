"""Fleet: this gateway's part in a fleet (QUEUE_URL set): accepting into the shared queue,
running jobs from it, and keeping an eye on Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

from redis.exceptions import RedisError

from app.core.addresses import AddressPolicy
from app.core.settings import Settings
from app.fleet.queue import FleetQueue
from app.fleet.rates import FleetRates
from app.fleet.shelf import FileShelf
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
        secret = settings.fleet_secret.get_secret_value() if settings.fleet_secret else None
        self.shelf = FileShelf(advertise_url(settings), secret)
        self.store = FleetStore(
            settings.queue_url.get_secret_value(),
            settings.queue_name,
            ttl_s=settings.job_history_ttl_s,
            timeout_s=settings.queue_timeout_s,
            history_max=settings.fleet_history_max,
            history_max_bytes=int(settings.fleet_history_max_mb * 2**20),
            age_step_s=settings.queue_age_step_s,
            shelf=self.shelf,
        )
        self.queue = FleetQueue(self.store, addresses, sender)
        self.rates = FleetRates(self.store)
        self.worker = FleetWorker(self.store, runner, scheduler, sender, settings)
        self.queue.taker = self.worker  # a job accepted while this gateway has room runs here
        self.depth = 0  # jobs queued or running in the fleet, as of the last check
        self._watch: asyncio.Task[None] | None = None
        log_file_sharing(settings, self.shelf)

    async def start(self) -> None:
        """Join the fleet: the consumer group exists, jobs are pulled, Redis is watched."""
        try:
            await self.store.ensure_group()
            await self.shelf.share_secret(self.store.redis, self.store.secret_key)
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
        """Ping Redis (for /ready and new jobs), read the queue's length, and adopt the fleet's
        secret (Redis may have come back empty, or another gateway set it first)."""
        while True:
            try:
                if not self.reachable:
                    await self.store.ensure_group()  # Redis may have come back empty
                await self.shelf.share_secret(self.store.redis, self.store.secret_key)
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


def advertise_url(settings: Settings) -> str:
    """Where the fleet's other gateways reach this one: FLEET_ADVERTISE_URL, else this host's
    address (HOST when it names one, else what this machine's name resolves to) and PORT."""
    if settings.fleet_advertise_url:
        return settings.fleet_advertise_url
    host = settings.host
    if host in ("", "::", "0.0.0.0"):
        try:
            host = socket.gethostbyname(socket.gethostname())
        except OSError:
            host = socket.gethostname()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def log_file_sharing(settings: Settings, shelf: FileShelf) -> None:
    """Say at start-up how the fleet's gateways fetch each other's outputs, and what is amiss."""
    log.info("fleet: other gateways fetch the outputs of jobs run here from %s", shelf.base)
    loopback = shelf.base.startswith(("http://127.", "http://[::1]", "http://localhost"))
    if loopback and not settings.fleet_advertise_url:  # the machine's name resolved to loopback
        log.warning(
            "fleet: %s is a loopback address, which gateways on other machines cannot reach: "
            "set FLEET_ADVERTISE_URL to an address they can",
            shelf.base,
        )
    if not shelf.configured:
        log.info(
            "fleet: FLEET_SECRET is unset: the gateways share a secret generated in Redis "
            "(%s:secret); set FLEET_SECRET (the same on every gateway) to choose it",
            settings.queue_name,
        )
    if settings.fleet_max_result_mb is not None:
        log.warning(
            "FLEET_MAX_RESULT_MB is deprecated and ignored: outputs no longer travel through "
            "Redis (only where to fetch them from); remove it"
        )
