"""FleetStore: the fleet's jobs in Redis. One stream of jobs to run, one hash and one event stream
per job, and a channel for interrupts.

    <name>:jobs              stream: one entry per accepted job (its generation), read by the
                             group `gateways`; a waiting job's entry is held by its consumer
                             `~queued` (app.fleet.order)
    <name>:waiting           sorted set: the keys of the jobs no gateway has taken, by rank
                             (priority and age: app.core.priority); lowest is taken first
    <name>:job:<key>         hash: the request, status, progress, result or error, attempts, and
                             `msg`, the id of the one message that may start it
    <name>:events:<key>      stream: the job's events, each with its number `n` (SSE ids)
    <name>:owners:<id>       hash: the API keys (ids) with a job of this request id, each `1`
                             while that job is queued or running, `0` once it ended; it expires
                             with the last of them (an admin key asking for an id without
                             naming its owner)
    <name>:active:<owner>    set: the keys of an API key's jobs queued or running (its max_jobs)
    <name>:finished          sorted set, with `:finished:bytes` and `:finished:total`: the
                             finished jobs kept, by finish time, and their sizes (the bounds)
    <name>:changed           channel: the key of a job that has a new event (app.fleet.signals)
    <name>:ended             channel: the key of a job whose outcome was just recorded
    <name>:cancel            channel: interrupts for the gateway that runs the job
    <name>:secret            string: the fleet's secret, without FLEET_SECRET (app.fleet.shelf)

A job's key is `<owner>/<request id>`, owner being the id of the API key that made it
(app.core.keys), or its request id alone while API keys are off: two keys may both use
`order-123`. Neither a key's id nor a request id holds a `/`, so a key names one job.

Every step that reads before it writes is a Lua script (app.fleet.scripts): a job's outcome is
written once, only the message of its current generation starts it, and only a gateway holding
that message does. Every call has a deadline (QUEUE_TIMEOUT_S): a call that times out is not
tried again, so a Redis that stops answering costs a request that long, then a 503.
"""

from __future__ import annotations

import json
import time
from typing import Any

from app.fleet import order, scripts
from app.fleet.reachability import Reachability, connect
from app.fleet.shelf import FileShelf
from app.fleet.signals import Signals
from app.fleet.stream import GROUP, JobStream, Pulled
from app.fleet.writes import JobWrites, packed
from app.jobs.records import JobEvent


def fleet_key(owner: str | None, request_id: str) -> str:
    """A job's key in the fleet: `<owner>/<request id>`, or the id alone without an owner."""
    return request_id if owner is None else f"{owner}/{request_id}"


def split_key(key: str) -> tuple[str | None, str]:
    """(owner, request id) of a job's key in the fleet."""
    owner, slash, request_id = key.partition("/")
    return (owner, request_id) if slash else (None, key)


class MaxJobsReached(Exception):
    """A job was not queued: its owner has this many queued or running, its max_jobs."""

    def __init__(self, have: int) -> None:
        super().__init__(f"{have} job(s) queued or running")
        self.have = have


class StillDelivering(Exception):
    """A job was not queued: the job that had its key ended, and its webhooks have not all gone
    out yet (a gateway that takes it over needs its record to send them)."""


class FleetStore(JobStream, JobWrites):
    """The fleet's shared state, over one Redis connection pool."""

    def __init__(
        self,
        url: str,
        name: str,
        *,
        ttl_s: float,
        timeout_s: float = 3.0,
        history_max: int = 10_000,
        history_max_bytes: int = 2**30,
        age_step_s: float = 30.0,
        shelf: FileShelf | None = None,
    ) -> None:
        # Typed loosely on purpose: redis-py's annotations cover bytes and str replies at once;
        # what comes back is parsed here, at the boundary.
        self.redis: Any = connect(url, timeout_s)
        self.name = name
        self.stream = f"{name}:jobs"
        self.waiting = f"{name}:waiting"
        self.age_step_s = age_step_s
        self.ttl_s = max(int(ttl_s), 1)
        self.timeout_s = timeout_s
        self.history = [f"{name}:finished", f"{name}:finished:bytes", f"{name}:finished:total"]
        self.bounds = [str(history_max), str(history_max_bytes)]
        register = self.redis.register_script
        self._enqueue, self._append = register(scripts.ENQUEUE), register(scripts.APPEND)
        self._finish, self._cancel = register(scripts.FINISH), register(scripts.CANCEL)
        self._start, self._release = register(scripts.START), register(scripts.RELEASE)
        self._ack, self._heartbeat = register(scripts.ACK), register(scripts.HEARTBEAT)
        self._rate = register(scripts.RATE)
        self._pull, self._reclaim = register(order.PULL), register(order.RECLAIM)
        self.reachability = Reachability(timeout_s)
        self.signals = Signals(self.redis, name, self.reachability)
        # The files of jobs run here, for the other gateways, and the fleet's secret.
        self.shelf = shelf or FileShelf()
        self.secret_key = f"{name}:secret"

    def job_key(self, key: str) -> str:
        return f"{self.name}:job:{key}"

    def events_key(self, key: str) -> str:
        return f"{self.name}:events:{key}"

    def owners_key(self, request_id: str) -> str:
        return f"{self.name}:owners:{request_id}"

    def active_key(self, owner: str | None) -> str:
        return f"{self.name}:active:{owner or ''}"

    def rate_key(self, key_id: str) -> str:
        return f"{self.name}:rate:{key_id}"

    def _owner_keys(self, key: str) -> tuple[list[str], str]:
        """The owners' index and active set a job's key belongs to, and its owner ('': none)."""
        owner, request_id = split_key(key)
        return [self.owners_key(request_id), self.active_key(owner)], owner or ""

    async def aclose(self) -> None:
        await self.signals.close()
        await self.redis.aclose()

    # -- the accepting side ---------------------------------------------------------------------
    async def enqueue(
        self, key: str, spec: dict[str, Any], queued: dict[str, Any], **options: Any
    ) -> str | None:
        """queue_job() without taking the job here: its generation."""
        generation, _ = await self.queue_job(key, spec, queued, **options)
        return generation

    async def queue_job(
        self,
        key: str,
        spec: dict[str, Any],
        queued: dict[str, Any],
        *,
        max_jobs: int = 0,
        hooks: bool = False,
        priority: int = 0,
        take_as: str | None = None,
    ) -> tuple[str | None, Pulled | None]:
        """Store the job and queue it: its generation (the id of its message); None when a job
        with this key is still running. MaxJobsReached (and nothing stored) when its owner has
        max_jobs (if not 0) queued or running already; StillDelivering when the key's last job
        has webhooks still to go. With take_as (the consumer of this gateway, which has a free
        ComfyUI) the job is taken and started by it in the same script when it is next in line:
        then its message, as a pull would have given it, comes back too."""
        owned, owner = self._owner_keys(key)
        keys = [self.job_key(key), self.events_key(key), self.stream, *owned, *self.history,
                self.waiting]  # fmt: skip
        args = [packed(spec), packed(queued), f"{time.time():.3f}", key, owner, str(max_jobs),
                self.job_key(""), "1" if hooks else "", str(priority), repr(self.age_step_s),
                GROUP, take_as or "", self.signals.queued_channel]  # fmt: skip
        outcome, found, *taken = await self._enqueue(keys=keys, args=args)
        if int(outcome) == 2:
            raise MaxJobsReached(int(found))
        if int(outcome) == 3:
            raise StillDelivering
        if int(outcome) != 1:
            return None, None
        if not taken:
            return str(found), None
        # Its hash is what this script wrote: its spec is known here, its generation current.
        state = {"msg": str(found)}
        return str(found), Pulled(str(found), key, state=state, started=int(taken[0]), spec=spec)

    async def owners(self, request_id: str) -> list[str]:
        """The API keys (ids) that have a job of this request id the fleet still knows."""
        owners: list[str] = sorted(await self.redis.hkeys(self.owners_key(request_id)))
        if not owners:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for owner in owners:
                pipe.exists(self.job_key(fleet_key(owner, request_id)))
            known = await pipe.execute()
        return [owner for owner, found in zip(owners, known, strict=True) if found]

    async def active(self, owner: str | None) -> int:
        """How many jobs of this API key are queued or running in the fleet."""
        return int(await self.redis.scard(self.active_key(owner)))

    async def take_rate(self, key_id: str, interval_s: float, burst: int) -> float | None:
        """One request from the key's fleet-wide bucket: None when it may go, else the seconds
        until it may."""
        interval_us = max(round(interval_s * 1_000_000), 1)
        over_us = int(await self._rate(keys=[self.rate_key(key_id)], args=[interval_us, burst]))
        return over_us / 1_000_000 if over_us > 0 else None

    async def state(self, key: str) -> dict[str, str]:
        """The job's hash (empty when no such job is known, or no longer)."""
        state: dict[str, str] = await self.redis.hgetall(self.job_key(key))
        return state

    async def events(self, key: str, after_stream_id: str) -> list[Any]:
        """The job's events after a stream id: [(stream id, fields)]."""
        found = await self.redis.xrange(self.events_key(key), min=f"({after_stream_id}")
        return list(found)

    async def last_event(self, key: str, generation: str | None = None) -> JobEvent | None:
        """The job's latest event; None when no such job is known (or no longer), or when a
        later job of its id (another generation) has replaced it."""
        found = await self.redis.xrevrange(self.events_key(key), count=1)
        if not found:
            return None
        fields = found[0][1]
        if generation is not None and fields.get("g", generation) != generation:
            return None
        return JobEvent(int(fields["n"]), fields["type"], json.loads(fields["data"]))

    async def error_status(self, key: str) -> int:
        """The HTTP status the job's error answered with where it ran (500 if unknown)."""
        error = await self.redis.hget(self.job_key(key), "error")
        return int(json.loads(error).get("status", 500)) if error else 500

    async def cancel(
        self, key: str, error: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Interrupt a job: end it here, its message gone with it, if no gateway has started it
        (its spec is returned: the caller delivers its webhooks), else tell the one that has
        (an empty dict). None when there is no such job, or it has ended already."""
        args = self._end_args(key, "interrupted", "failed", data, error, "")
        keys = [*self._end_keys(key), self.stream, self.waiting]
        answer = await self._cancel(keys=keys, args=[*args, GROUP, self.signals.cancel_channel])
        if int(answer[0]) == 0:
            return None
        if int(answer[0]) == 2:
            return {}
        spec: dict[str, Any] = json.loads(answer[1] or "{}")
        return spec
