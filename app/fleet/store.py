"""FleetStore: the fleet's jobs in Redis. One stream of jobs to run, one hash and one event stream
per job, and a channel for interrupts.

    <name>:jobs              stream: one entry per accepted job, read by the group `gateways`
    <name>:job:<key>         hash: the request, status, progress, result or error, attempts
    <name>:events:<key>      stream: the job's events, each with its number `n` (SSE ids)
    <name>:owners:<id>       hash: the API keys (ids) with a job of this request id, each `1`
                             while that job is queued or running, `0` once it ended; it expires
                             with the last of them (an admin key asking for an id without
                             naming its owner)
    <name>:active:<owner>    set: the keys of an API key's jobs queued or running (its max_jobs)
    <name>:changed           channel: the key of a job that has a new event (app.fleet.signals)
    <name>:ended             channel: the key of a job whose outcome was just recorded
    <name>:cancel            channel: interrupts for the gateway that runs the job

A job's key is `<owner>/<request id>`, owner being the id of the API key that made it
(app.core.keys), or its request id alone while API keys are off: two keys may both use
`order-123`. Neither a key's id nor a request id holds a `/`, so a key names one job.

A job's terminal outcome is written once (a Lua script checks and sets it), so among gateways
that ran the same job (one was thought dead and was not) exactly one delivers its webhooks.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.core.records import TERMINAL, JobEvent
from app.fleet.signals import Signals

log = logging.getLogger(__name__)
GROUP = "gateways"
FINISHED = ("succeeded", "failed", "interrupted")

# KEYS: job hash, events stream, jobs stream, owners of the id, the owner's active jobs.
# ARGV: spec json, queued event data, now, job key, owner ('' none), max_jobs (0: no limit),
# the prefix of job hashes. Returns {1, 0} queued, {0, 0} when a job with this key is still
# running, {2, n} when the owner has n >= max_jobs jobs queued or running already.
ENQUEUE = """
local owner, most = ARGV[5], tonumber(ARGV[6])
if owner ~= '' and most > 0 then
  local have = 0
  for _, key in ipairs(redis.call('SMEMBERS', KEYS[5])) do
    local job = ARGV[7] .. key
    if redis.call('EXISTS', job) == 0 or redis.call('HEXISTS', job, 'done') == 1 then
      redis.call('SREM', KEYS[5], key)  -- ended without being taken off (never, unless edited)
    else
      have = have + 1
    end
  end
  if have >= most then return {2, have} end
end
local status = redis.call('HGET', KEYS[1], 'status')
if status and status ~= 'succeeded' and status ~= 'failed' and status ~= 'interrupted' then
  return {0, 0}
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'spec', ARGV[1], 'status', 'queued', 'created', ARGV[3],
           'progress', '{"value":0,"max":0,"node":null}')
redis.call('XADD', KEYS[2], '*', 'n', 1, 'type', 'queued', 'data', ARGV[2])
redis.call('XADD', KEYS[3], '*', 'key', ARGV[4])
if owner ~= '' then
  redis.call('SADD', KEYS[5], ARGV[4])
  redis.call('HSET', KEYS[4], owner, '1')
  redis.call('PERSIST', KEYS[4])
end
return {1, 0}
"""
# KEYS: job hash, events stream. ARGV: type, data json, status ('' keeps it), progress json,
# changed channel, job key.
APPEND = """
if redis.call('HEXISTS', KEYS[1], 'done') == 1 then return 0 end
local n = redis.call('XLEN', KEYS[2]) + 1
redis.call('XADD', KEYS[2], '*', 'n', n, 'type', ARGV[1], 'data', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'status', ARGV[3]) end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'progress', ARGV[4]) end
redis.call('PUBLISH', ARGV[5], ARGV[6])
return n
"""
# KEYS: job hash, events stream, owners of the id, the owner's active jobs. ARGV: status, type,
# data json, error json ('' on success), ttl seconds, now, ended channel, job key, owner ('' none).
# The result is the terminal event's data: stored once. The owners' index of the id expires
# with the last of its jobs to end.
FINISH = """
if redis.call('HSETNX', KEYS[1], 'done', '1') == 0 then return 0 end
local n = redis.call('XLEN', KEYS[2]) + 1
redis.call('XADD', KEYS[2], '*', 'n', n, 'type', ARGV[2], 'data', ARGV[3])
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finished', ARGV[6])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[4]) end
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
if ARGV[9] ~= '' then
  redis.call('SREM', KEYS[4], ARGV[8])
  redis.call('HSET', KEYS[3], ARGV[9], '0')
  local live = false
  for _, state in ipairs(redis.call('HVALS', KEYS[3])) do
    if state == '1' then live = true end
  end
  if not live then redis.call('EXPIRE', KEYS[3], ARGV[5]) end
end
redis.call('PUBLISH', ARGV[7], ARGV[8])
return 1
"""


# KEYS: jobs stream. ARGV: group, consumer, message ids. Resets the idle time of the jobs this
# consumer still holds; returns those another gateway has taken over meanwhile.
HEARTBEAT = """
local lost = {}
for i = 3, #ARGV do
  local entry = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)[1]
  if entry and entry[2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
"""
# KEYS: jobs stream, job hash. ARGV: group, message id. Done with a job: its webhooks went out.
ACK = """
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HSET', KEYS[2], 'delivered', '1') end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""
# KEYS: jobs stream. ARGV: group, message id, job key. A job handed back goes to the end.
RELEASE = """
redis.call('XADD', KEYS[1], '*', 'key', ARGV[3])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""

# One request from an API key's bucket of requests_per_minute, as GCRA keeps it: KEYS[1] holds
# when the bucket is next full (µs, Redis's own clock, so the gateways' clocks do not matter).
# ARGV: the interval between requests, the burst. Returns 0 when the request may go, else the
# µs until it may.
RATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local full_at = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now) + interval
local over = full_at - now - tonumber(ARGV[2]) * interval
if over > 0 then return over end
local ttl_ms = math.ceil((full_at - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%d', full_at), 'PX', ttl_ms)
return 0
"""


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


class Reachability:
    """Whether Redis answered lately; an outage is logged once as it begins and once as it
    ends, however many calls fail in between."""

    def __init__(self) -> None:
        self.up = True

    def failed(self, error: Exception) -> None:
        if self.up:
            log.error(
                "fleet: Redis is not reachable (%s): new jobs get 503; running jobs go on, and "
                "their events and outcomes wait for it",
                error,
            )
        self.up = False

    def answered(self) -> None:
        if not self.up:
            log.info("fleet: Redis is reachable again")
        self.up = True


@dataclass(frozen=True)
class Pulled:
    """A job message this gateway took from the stream."""

    message_id: str
    key: str
    reclaimed: bool = False  # taken over from a gateway that stopped heartbeating


class FleetStore:
    """The fleet's shared state, over one Redis connection pool."""

    def __init__(self, url: str, name: str, *, ttl_s: float) -> None:
        # Typed loosely on purpose: redis-py's annotations cover bytes and str replies at once;
        # what comes back is parsed here, at the boundary.
        self.redis: Any = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=10,
            socket_connect_timeout=5,
            # A pooled connection a restarted Redis closed fails once: try again on a new one.
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            health_check_interval=30,
        )
        self.name = name
        self.stream = f"{name}:jobs"
        self.ttl_s = max(int(ttl_s), 1)
        self._enqueue = self.redis.register_script(ENQUEUE)
        self._append = self.redis.register_script(APPEND)
        self._finish = self.redis.register_script(FINISH)
        self._release = self.redis.register_script(RELEASE)
        self._ack = self.redis.register_script(ACK)
        self._heartbeat = self.redis.register_script(HEARTBEAT)
        self._rate = self.redis.register_script(RATE)
        self.reachability = Reachability()
        self.signals = Signals(self.redis, name, self.reachability)

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

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def ping(self) -> None:
        await self.redis.ping()

    # -- the accepting side ---------------------------------------------------------------------
    async def enqueue(
        self, key: str, spec: dict[str, Any], queued: dict[str, Any], *, max_jobs: int = 0
    ) -> bool:
        """Store the job and queue it; False when a job with this key is still running.
        MaxJobsReached (and nothing stored) when its owner has max_jobs (if not 0) queued or
        running already."""
        owned, owner = self._owner_keys(key)
        keys = [self.job_key(key), self.events_key(key), self.stream, *owned]
        args = [_dump(spec), _dump(queued), f"{time.time():.3f}", key, owner, str(max_jobs),
                self.job_key("")]  # fmt: skip
        outcome, have = await self._enqueue(keys=keys, args=args)
        if int(outcome) == 2:
            raise MaxJobsReached(int(have))
        return int(outcome) == 1

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

    async def last_event(self, key: str) -> JobEvent | None:
        """The job's latest event; None when no such job is known (or no longer)."""
        found = await self.redis.xrevrange(self.events_key(key), count=1)
        if not found:
            return None
        fields = found[0][1]
        return JobEvent(int(fields["n"]), fields["type"], json.loads(fields["data"]))

    async def error_status(self, key: str) -> int:
        """The HTTP status the job's error answered with where it ran (500 if unknown)."""
        error = await self.redis.hget(self.job_key(key), "error")
        return int(json.loads(error).get("status", 500)) if error else 500

    async def position(self, key: str) -> int | None:
        """Jobs queued before this one that no gateway has taken yet, or None."""
        groups = await self.redis.xinfo_groups(self.stream)
        delivered = next((g["last-delivered-id"] for g in groups if g["name"] == GROUP), "0-0")
        waiting = await self.redis.xrange(self.stream, min=f"({delivered}", count=1000)
        for ahead, (_, fields) in enumerate(waiting):
            if fields.get("key") == key:
                return ahead
        return None

    async def cancel(
        self, key: str, error: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, str] | None:
        """Interrupt a job: end it here if no gateway runs it yet (its state is returned: the
        caller delivers its webhooks), else tell the one that does (an empty dict). None when
        there is no such job, or it has ended already."""
        state = await self.state(key)
        if not state or state.get("status") in FINISHED:
            return None
        not_taken = state.get("status") == "queued" and not state.get("gateway")
        if not_taken and await self.finish(key, "interrupted", "failed", data, error):
            return state
        await self.redis.publish(self.signals.cancel_channel, key)
        return {}

    # -- the running side -----------------------------------------------------------------------
    async def pull(self, consumer: str, block_ms: int) -> Pulled | None:
        """The next job no gateway has taken, waiting up to block_ms; None if none came."""
        try:
            answer = await self.redis.xreadgroup(
                GROUP, consumer, {self.stream: ">"}, count=1, block=block_ms
            )
        except ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            await self.ensure_group()  # Redis restarted without its data
            return None
        if not answer or not answer[0][1]:
            return None
        message_id, fields = answer[0][1][0]
        return Pulled(message_id, fields.get("key", ""))

    async def reclaim(self, consumer: str, idle_ms: int) -> Pulled | None:
        """A job whose gateway stopped heartbeating for idle_ms, taken over; None if none."""
        _, claimed, _ = await self.redis.xautoclaim(
            self.stream, GROUP, consumer, min_idle_time=idle_ms, count=1
        )
        if not claimed:
            return None
        message_id, fields = claimed[0]
        return Pulled(message_id, (fields or {}).get("key", ""), reclaimed=True)

    async def heartbeat(self, consumer: str, message_ids: list[str]) -> list[str]:
        """Still working on these: reset their idle time, so nobody takes them over. Those
        another gateway took over meanwhile (this one went quiet too long) are returned."""
        if not message_ids:
            return []
        lost = await self._heartbeat(keys=[self.stream], args=[GROUP, consumer, *message_ids])
        return [str(message_id) for message_id in lost]

    async def ack(self, pulled: Pulled) -> None:
        """Done with the job: its outcome is recorded and its webhooks went out."""
        await self._ack(
            keys=[self.stream, self.job_key(pulled.key)], args=[GROUP, pulled.message_id]
        )

    async def release(self, pulled: Pulled) -> None:
        """Hand a job this gateway will not run back to the queue (at its end), for another."""
        await self._release(keys=[self.stream], args=[GROUP, pulled.message_id, pulled.key])

    async def started(self, key: str, consumer: str) -> int:
        """Note that this gateway starts the job; which start it is (1: the first)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.job_key(key), "gateway", consumer)
            pipe.hincrby(self.job_key(key), "attempts", 1)
            _, attempt = await pipe.execute()
        return int(attempt)

    async def append(self, key: str, event: JobEvent, status: str, progress: Any) -> None:
        """Add a job's event to its stream (not once it has ended)."""
        await self.append_all(key, [(event, status, progress)])

    async def append_all(self, key: str, events: list[tuple[JobEvent, str, Any]]) -> None:
        """Add events (with the status and progress after each) in order, in one round trip."""
        keys = [self.job_key(key), self.events_key(key)]
        calls = [
            [event.type, _dump(event.data), status, _dump(progress) if progress else "",
             self.signals.changed_channel, key]
            for event, status, progress in events
        ]  # fmt: skip
        if len(calls) == 1:
            await self._append(keys=keys, args=calls[0])
            return
        try:
            await self._append_pipelined(keys, calls)
        except NoScriptError:  # a restarted Redis forgot the script: load it, go again
            await self.redis.script_load(APPEND)
            await self._append_pipelined(keys, calls)

    async def _append_pipelined(self, keys: list[str], calls: list[list[str]]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for args in calls:
                pipe.evalsha(self._append.sha, len(keys), *keys, *args)
            await pipe.execute()

    async def finish(
        self,
        key: str,
        status: str,
        event_type: str,
        data: dict[str, Any],
        error: dict[str, Any] | None = None,
    ) -> bool:
        """Record the job's outcome, once: True for the caller that recorded it."""
        assert event_type in TERMINAL
        owned, owner = self._owner_keys(key)
        keys = [self.job_key(key), self.events_key(key), *owned]
        shown = _dump(error) if error is not None else ""
        args = [status, event_type, _dump(data), shown, str(self.ttl_s), f"{time.time():.3f}"]
        args += [self.signals.ended_channel, key, owner]
        return bool(await self._finish(keys=keys, args=args))


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
