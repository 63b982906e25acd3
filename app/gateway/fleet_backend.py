"""FleetBackend: a fleet's jobs (QUEUE_URL), in Redis: queued by any gateway, run by whichever
has a free ComfyUI (app.fleet.worker), read and interrupted from any."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from redis.exceptions import RedisError

from app.comfy.graph import Graph
from app.core.limits import SharedRates
from app.core.options import JobOptions
from app.fleet import listing
from app.fleet.fleet import Fleet
from app.fleet.shelf import FileShelf
from app.fleet.store import MaxJobsReached, split_key
from app.gateway.backend import AcceptedJob, AtMaxJobs, Peer, QueuedJob
from app.jobs.records import JobView
from app.jobs.runner import JobRunner

T = TypeVar("T")


class FleetBackend:
    """Jobs in the fleet's Redis; this gateway's runner runs the ones its worker pulls."""

    who_knows = "the fleet knows"
    full_queue_means_not_ready = False

    def __init__(self, fleet: Fleet, runner: JobRunner) -> None:
        self.fleet = fleet
        self.runner = runner
        self.shared_rates: SharedRates | None = fleet.rates
        self.shelf: FileShelf | None = fleet.shelf

    @property
    def depth(self) -> int:
        return max(self.fleet.depth, len(self.runner.active))

    def down_reason(self) -> str | None:
        return self.fleet.down_reason()

    async def submit(
        self,
        request_id: str,
        graph: Graph,
        options: JobOptions | None,
        *,
        owner: str | None,
        max_jobs: int,
        echo_input: dict[str, Any] | None,
        workflow: str,
    ) -> AcceptedJob:
        try:  # the key's jobs are counted in Redis, as the job is queued
            return await self.fleet.queue.submit(
                request_id,
                graph,
                options or JobOptions(),
                owner=owner,
                max_jobs=max_jobs,
                echo_input=echo_input,
                workflow=workflow,
            )
        except MaxJobsReached as e:
            raise AtMaxJobs(e.have) from None

    async def record(self, request_id: str, owner: str | None) -> JobView | None:
        return await self.fleet.queue.record(request_id, owner)

    async def owners(self, request_id: str) -> list[str | None]:
        return list(await self.fleet.queue.owners(request_id))  # the fleet's index by id

    async def jobs_of(self, owner: str | None) -> int:
        return await self.fleet.queue.jobs_of(owner)

    async def running(self, record: JobView) -> JobView | None:
        return None if record.finished else record

    async def position(self, record: JobView) -> int | None:
        return await self.fleet.queue.position(record.id, record.owner)

    async def queued(self, limit: int) -> list[QueuedJob]:
        now = time.time()  # when each was queued is the accepting gateway's clock
        return [
            QueuedJob(request_id, owner, priority, position, round(max(now - created, 0.0), 3))
            for position, (key, priority, created) in enumerate(
                await self.fleet.queue.queued(limit)
            )
            for owner, request_id in [split_key(key)]
        ]

    async def interrupt(self, record: JobView) -> None:
        await self.fleet.queue.interrupt(record.id, record.owner)

    async def finished(self, limit: int) -> list[JobView]:
        return list(await self._read(listing.finished(self.fleet.store, limit)))

    async def peers(self) -> list[Peer]:
        found = await self._read(listing.consumers(self.fleet.store))
        this = self.fleet.worker.consumer
        return [
            Peer(str(c["name"]), int(c["pending"]), int(c["idle"]) / 1000, c["name"] == this)
            for c in found
        ]

    async def _read(self, reading: Awaitable[T]) -> T:
        """A listing's answer; 503 (Redis out of reach) when Redis does not give it."""
        try:
            return await reading
        except RedisError as e:
            raise self.fleet.store.reachability.unavailable(e) from e

    async def start(self) -> None:
        await self.fleet.start()

    def stop_taking(self) -> None:
        self.fleet.worker.stop_pulling()

    def abandon(self) -> None:
        # Past the grace period a fleet job is not failed but left to another gateway, which
        # takes it over once its visibility timeout passes.
        self.fleet.worker.abandon()

    async def close(self, timeout_s: float) -> None:
        await self.fleet.close(timeout_s)
