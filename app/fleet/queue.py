"""FleetQueue: accepting jobs into the fleet's queue, and reading them back, on any gateway.

A job is checked here as on a lone gateway (the graph's shape, the URLs it names), then stored
in Redis and queued; whichever gateway has a free ComfyUI runs it (app.fleet.worker; this one,
taken in the enqueue itself, when it has room and the job is next in line), and that gateway
downloads the models the graph names by URL (app.jobs.runner). A synchronous request waits here
for the job's outcome, read from its event stream (or handed over, when it ran here).

A job is its owner's (the id of the API key that made it): the owner is part of its key in Redis
(app.fleet.store), so two keys' jobs of the same id are two jobs. Which caller may see which job
is the door's to decide (app.gateway.door); here every lookup names the owner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.exceptions import RedisError

from app.comfy.graph import Graph, check_graph
from app.core.addresses import AddressPolicy
from app.core.errors import (
    Conflict,
    Interrupted,
    NotFound,
    error_from_body,
)
from app.core.options import JobOptions
from app.core.outcome import JobOutcome
from app.fleet.records import RemoteRecord
from app.fleet.results import check_available, from_redis
from app.fleet.signals import POLL_S, wait
from app.fleet.spec import deliver_ending, dump_options
from app.fleet.store import FleetStore, StillDelivering, fleet_key, split_key
from app.fleet.stream import Pulled
from app.jobs.destinations import check_destinations
from app.jobs.records import TERMINAL, JobEvent
from app.jobs.webhooks import WebhookSender

log = logging.getLogger(__name__)


class Taker(Protocol):
    """What the accepting side asks of this gateway's worker (app.fleet.worker)."""

    def reserve(self) -> str | None: ...
    def unreserve(self) -> None: ...
    def take(self, pulled: Pulled) -> None: ...
    def runs(self, generation: str) -> bool: ...


@dataclass(eq=False)
class FleetJob:
    """A job accepted into the fleet: what answering it over HTTP needs."""

    id: str
    record: RemoteRecord
    prompt: Graph
    queue: FleetQueue
    _task: asyncio.Task[JobOutcome] | None = field(default=None, repr=False)

    @property
    def task(self) -> asyncio.Task[JobOutcome]:
        """The job's outcome, read from Redis; started when a request first waits for it."""
        if self._task is None:
            outcome = self.queue.outcome(self.record.key, self.record.generation)
            self._task = asyncio.create_task(outcome)
        return self._task


class FleetQueue:
    """The accepting side of the fleet: queue a job, read its state, interrupt it."""

    def __init__(self, store: FleetStore, addresses: AddressPolicy, sender: WebhookSender) -> None:
        self.store = store
        self.addresses = addresses
        self.sender = sender
        self._deliveries: set[asyncio.Task[None]] = set()
        self.taker: Taker | None = None  # this gateway's worker, when it runs jobs

    def key(self, request_id: str, owner: str | None) -> str:
        """The job's key in Redis: its owner's id and its request id."""
        return fleet_key(owner, request_id)

    async def submit(
        self,
        request_id: str,
        graph: Graph,
        options: JobOptions,
        *,
        owner: str | None,
        max_jobs: int = 0,
        echo_input: dict[str, Any] | None,
        workflow: str,
    ) -> FleetJob:
        """Check and queue a job of this owner's; Conflict when its job with this id is still
        running; with max_jobs, MaxJobsReached (app.fleet.store) when the owner has that many
        queued or running in the fleet already."""
        check_graph(graph)  # its shape only: model URLs are resolved by the gateway that runs it
        await check_destinations(options, self.addresses)
        spec = {
            "id": request_id,
            "owner": owner,
            "graph": graph,
            "options": dump_options(options),
            "echo_input": echo_input,
            "workflow": workflow,
            "accepted_at": time.time(),
        }
        key = self.key(request_id, owner)
        await self._recorded(owner, None if max_jobs else key)  # its id, or all it counts
        hooks = bool(options.webhook or options.webhook_v2)
        # A free ComfyUI here takes the job in its enqueue when it is next in line: no pull.
        take_as = self.taker.reserve() if self.taker is not None else None
        taken = None
        try:
            queued, taken = await self.store.queue_job(
                key, spec, {"id": request_id}, max_jobs=max_jobs, hooks=hooks,
                priority=options.priority, take_as=take_as,
            )  # fmt: skip
        except RedisError as e:
            raise self.store.reachability.unavailable(e) from e
        except StillDelivering:
            raise Conflict(
                f"the last job with id {request_id!r} has ended, but its webhooks are still "
                "being delivered: retry once they are",
                location="id",
                headers={"Retry-After": "5"},
            ) from None
        finally:
            if self.taker is not None and take_as is not None:
                if taken is not None:
                    self.taker.take(taken)
                else:
                    self.taker.unreserve()
        if queued is None:
            raise Conflict(f"a job with id {request_id!r} is already running", location="id")
        record = RemoteRecord.queued(self.store, key, request_id, workflow, owner, queued)
        of = f" of key {owner}" if owner is not None else ""
        log.info("job %s%s: queued in the fleet (%d nodes)", request_id, of, len(graph))
        return FleetJob(request_id, record, graph, self)

    async def record(self, request_id: str, owner: str | None) -> RemoteRecord | None:
        """The owner's job with this id, or None when the fleet knows none (or no longer)."""
        key = self.key(request_id, owner)
        await self._recorded(owner, key)
        try:
            return await RemoteRecord.load(self.store, key)
        except RedisError as e:
            raise self.store.reachability.unavailable(e) from e

    async def owners(self, request_id: str) -> list[str]:
        """The API keys (ids) with a job of this id that the fleet still knows."""
        try:
            return await self.store.owners(request_id)
        except RedisError as e:
            raise self.store.reachability.unavailable(e) from e

    async def jobs_of(self, owner: str | None) -> int:
        """The owner's jobs queued or running in the fleet."""
        await self._recorded(owner)
        try:
            return await self.store.active(owner)
        except RedisError as e:
            raise self.store.reachability.unavailable(e) from e

    async def outcome(self, key: str, generation: str | None) -> JobOutcome:
        """Wait for the job's end: its result, or its error raised. Woken only by the end (not
        by each event), and reading only the last event, whatever the job did before; a job
        this gateway runs is not read at all: its outcome is handed over as it is, or its
        followers woken to read it (app.fleet.signals)."""
        signals = self.store.signals
        with signals.watch(key, ends_only=True) as ended:
            while True:
                ended.clear()  # before reading: an end from here on is not missed
                if (here := signals.settled(key, generation)) is not None:
                    if here.error is not None:
                        raise here.error
                    return here
                if self._runs_here(generation):
                    await wait(ended, POLL_S)
                    continue
                try:
                    last = await self.store.last_event(key, generation)
                    if last is None:
                        request_id = split_key(key)[1]
                        raise NotFound(
                            f"the job {request_id!r} is no longer kept (it expired, or a later "
                            "job of its id replaced it) before its outcome was read",
                            location="id",
                        )
                    if last.type in TERMINAL:
                        return await self._answer(key, last)
                except RedisError as e:  # Redis restarts: keep waiting for the job's outcome
                    self.store.reachability.failed(e)
                    await asyncio.sleep(1)
                    continue
                await wait(ended, POLL_S)

    def _runs_here(self, generation: str | None) -> bool:
        """Whether this gateway runs this generation of the job, its outcome not recorded yet
        (recording it included): settled here, or its followers woken, when it ends."""
        return generation is not None and self.taker is not None and self.taker.runs(generation)

    async def _recorded(self, owner: str | None, key: str | None = None) -> None:
        """Until the outcomes this gateway is recording of the owner's jobs (or only of the job
        with this key) are in Redis: their followers here answered as they were sent
        (app.fleet.worker), and what the owner does next here finds them ended (a job of the
        same id, its max_jobs, a read of the job)."""
        await self.store.signals.recorded(
            lambda recording: recording == key if key else split_key(recording)[0] == owner,
            self.store.timeout_s,
        )

    async def _answer(self, key: str, last: JobEvent) -> JobOutcome:
        if last.type == "complete":
            outcome = from_redis(last.data, self.store.shelf)
            await check_available(outcome)  # a clear error now, not an answer cut short
            return outcome
        status = await self.store.error_status(key)
        raise error_from_body(status, {k: v for k, v in last.data.items() if k != "id"})

    async def interrupt(self, request_id: str, owner: str | None) -> None:
        """Cancel the owner's job: ended here while no gateway has taken it (its webhooks go
        from here), else interrupted by the gateway that runs it."""
        error = Interrupted("the job was interrupted on request")
        key = self.key(request_id, owner)
        await self._recorded(owner, key)
        try:
            ended = await self.store.cancel(
                key,
                {**error.body(), "status": error.status},
                {"id": request_id, **error.body()},
            )
        except RedisError as e:
            raise self.store.reachability.unavailable(e) from e
        if ended is None:
            raise NotFound(f"no queued or running job has id {request_id!r}", location="id")
        if ended:
            log.info("job %s: interrupted before any gateway took it", request_id)
            outcome = JobOutcome.failed(request_id, ended["graph"], error)
            task = asyncio.create_task(deliver_ending(self.sender, ended, outcome))
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)

    async def drain(self, timeout_s: float) -> None:
        """Let the webhooks of jobs ended here go out, at most timeout_s."""
        if self._deliveries:
            await asyncio.wait(set(self._deliveries), timeout=timeout_s)

    async def position(self, request_id: str, owner: str | None) -> int | None:
        try:
            return await self.store.position(self.key(request_id, owner))
        except RedisError:
            return None

    async def queued(self, limit: int) -> list[tuple[str, int, float]]:
        """The first `limit` waiting jobs, in order: (key, priority, when it was queued)."""
        try:
            return await self.store.queued(limit)
        except RedisError as e:
            raise self.store.reachability.unavailable(e) from e
