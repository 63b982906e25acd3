"""FleetWorker: the running side of the fleet. Pulls a job from Redis whenever one of this
gateway's ComfyUI instances is free, runs it with the local job runner, mirrors its events into
Redis, records its outcome once, and delivers its webhooks if it was the one to record it.

A job stays pending in the stream while it runs and is heartbeated (its idle time reset); when
a gateway dies, its jobs go idle and another gateway takes them over after
JOB_VISIBILITY_TIMEOUT_S, up to JOB_MAX_ATTEMPTS starts.

A job runs as its owner's (the API key that made it, from its spec): the local record, its
webhooks' `key_name` and the per-key metrics carry it as on a lone gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Coroutine
from typing import Any

from redis.exceptions import RedisError

from app.core.errors import ComfyUnavailable, GatewayError, ResultTooLarge, error_from_body
from app.core.options import JobOptions
from app.core.records import TERMINAL, JobEvent, JobKey, JobRecord
from app.core.settings import Settings
from app.fleet.queue import deliver_ending, spec_of
from app.fleet.records import RemoteRecord
from app.fleet.store import FleetStore, Pulled, split_key
from app.jobs.job import Job
from app.jobs.runner import JobRunner
from app.jobs.scheduler import Scheduler
from app.jobs.webhooks import WebhookSender

log = logging.getLogger(__name__)
RETRY_S = 1.0  # between attempts to reach Redis


class EventSink:
    """Copies one job's events into Redis in order, retrying while Redis is away."""

    def __init__(self, store: FleetStore, key: str) -> None:
        self.store = store
        self.key = key
        self.pending: asyncio.Queue[tuple[JobEvent, str, Any] | None] = asyncio.Queue()
        self.writer = asyncio.create_task(self._write(), name=f"fleet-events-{key}")

    def offer(self, event: JobEvent, record: JobRecord) -> None:
        # `queued` was written when the job was accepted; the end is written with the outcome.
        if event.type != "queued" and event.type not in TERMINAL:
            self.pending.put_nowait((event, record.status, dict(record.progress)))

    async def _write(self) -> None:
        closing = False
        while not closing:
            batch = [await self.pending.get()]
            while not self.pending.empty():  # whatever piled up goes in one round trip
                batch.append(self.pending.get_nowait())
            closing = None in batch
            events = [item for item in batch if item is not None]
            while events:
                try:
                    await self.store.append_all(self.key, events)
                    break
                except (RedisError, OSError) as e:
                    self.store.reachability.failed(e)
                    await asyncio.sleep(RETRY_S)

    async def close(self) -> None:
        """Write what is pending, then stop."""
        self.pending.put_nowait(None)
        await self.writer


class FleetWorker:
    """Runs the fleet's jobs on this gateway's instances, one per free instance."""

    def __init__(
        self,
        store: FleetStore,
        runner: JobRunner,
        scheduler: Scheduler[Any],
        sender: WebhookSender,
        settings: Settings,
    ) -> None:
        self.store = store
        self.runner = runner
        self.scheduler = scheduler
        self.sender = sender
        self.visibility_ms = int(settings.job_visibility_timeout_s * 1000)
        self.max_attempts = settings.job_max_attempts
        self.max_result_bytes = int(settings.fleet_max_result_mb * 2**20)
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        # By (owner, request id), as the runner holds them: two keys' jobs may share an id.
        self.running: dict[JobKey, Pulled] = {}  # job -> the stream message it came in
        self.starting: dict[str, Pulled] = {}  # Redis key -> pulled, until it runs (or ended)
        self.cancelled: set[str] = set()  # Redis keys of jobs interrupted while being started
        self.sinks: dict[JobKey, EventSink] = {}
        self.overtaken: set[JobKey] = set()  # running here, and taken over by another gateway
        self.pulling = True
        self._next_reclaim = 0.0  # monotonic: when to look for jobs of stopped gateways again
        self.abandoning = False  # shutting down past the grace period: leave jobs to others
        self._tasks: list[asyncio.Task[None]] = []
        self._finishing: set[asyncio.Task[None]] = set()  # acks after a job's end
        runner.outcome = self.record_outcome
        store.signals.on_cancel = self._interrupt

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._pull(), name="fleet-pull"),
            asyncio.create_task(self._heartbeat(), name="fleet-heartbeat"),
        ]
        log.info("fleet: pulling jobs from %s as %s", self.store.stream, self.consumer)

    def stop_pulling(self) -> None:
        self.pulling = False

    async def close(self) -> None:
        if self._finishing:
            await asyncio.wait(set(self._finishing), timeout=5)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- taking jobs ----------------------------------------------------------------------------
    async def _pull(self) -> None:
        while self.pulling:
            free = sum(1 for i in self.scheduler.instances if self.scheduler.free(i))
            if free <= len(self.starting):  # each job being started takes one of them
                await self.scheduler.wait_free(timeout_s=0.2 if self.starting else 1.0)
                continue
            try:
                pulled = None
                if time.monotonic() >= self._next_reclaim:  # jobs of stopped gateways first
                    self._next_reclaim = time.monotonic() + self.visibility_ms / 4000
                    pulled = await self.store.reclaim(self.consumer, self.visibility_ms)
                    if pulled is not None:  # there may be more: look again next time round
                        self._next_reclaim = 0.0
                pulled = pulled or await self.store.pull(self.consumer, block_ms=1000)
            except (RedisError, OSError) as e:
                self.store.reachability.failed(e)
                await asyncio.sleep(RETRY_S)
                continue
            self.store.reachability.answered()
            if pulled is None or self._holds(pulled):
                continue  # nothing came, or our own job back from a late heartbeat
            if not self.pulling:
                await self.store.release(pulled)  # taken as the gateway began to stop
            else:
                # Started aside: fetching its inputs may take a while, and another instance of
                # this gateway may be free for the next job meanwhile.
                self.starting[pulled.key] = pulled
                self._track(self._start(pulled))

    def _holds(self, pulled: Pulled) -> bool:
        """Whether this gateway already starts or runs the job of this message."""
        mine = [*self.starting.values(), *self.running.values()]
        return any(p.message_id == pulled.message_id for p in mine)

    async def _start(self, pulled: Pulled) -> None:
        try:
            await self._run(pulled)
        except (RedisError, OSError) as e:  # left pending: taken over once Redis is back
            self.store.reachability.failed(e)
        except Exception:  # a bug must not stop the gateway's work; the job ends, reported
            log.exception("fleet: could not start job %s", pulled.key)
            await self._fail_broken(pulled)
        finally:
            self.starting.pop(pulled.key, None)
            self.cancelled.discard(pulled.key)

    async def _run(self, pulled: Pulled) -> None:
        """Start a pulled job here, or end it if it cannot be started."""
        state = await self.store.state(pulled.key)
        if not state or "done" in state:  # ended meanwhile (interrupted, expired)
            if state and pulled.reclaimed and "delivered" not in state:
                # Its gateway stopped between recording the outcome and the webhooks.
                await self._redeliver(pulled.key, state)
            await self.store.ack(pulled)
            return
        spec = spec_of(state)
        request_id, options = spec["id"], JobOptions.model_validate(spec["options"])
        owner: str | None = spec.get("owner")
        job_key = (owner, request_id)
        started = int(state.get("attempts") or 0)
        if started >= self.max_attempts:
            lost = ComfyUnavailable(
                f"the job was started {started} time(s) by gateways that stopped before it ended "
                f"(JOB_MAX_ATTEMPTS={self.max_attempts})"
            )
            await self._end_unstarted(pulled, spec, lost)
            return
        attempt = await self.store.started(pulled.key, self.consumer)
        if attempt > 1:
            log.warning("job %s: taken over from a gateway that stopped (start %d of at most %d)",
                        request_id, attempt, self.max_attempts)  # fmt: skip
            queued = JobEvent(0, "queued", {"id": request_id, "attempt": attempt})
            await self.store.append(pulled.key, queued, "queued", None)
        # Heartbeated from the pull on (self.starting): the runner downloads the job's models
        # and inputs before it places the job, which may take longer than the visibility timeout.
        sink = EventSink(self.store, pulled.key)
        try:
            job = await self.runner.start(
                request_id,
                spec["graph"],
                options,
                owner=owner,
                echo_input=spec.get("echo_input"),
                workflow=spec.get("workflow", "prompt"),
                listener=sink.offer,
            )
        except GatewayError as e:  # refused by ComfyUI, a model or input that cannot be fetched
            await sink.close()
            await self._end_unstarted(pulled, spec, e)
            return
        except BaseException:
            await sink.close()
            raise
        self.running[job_key] = pulled
        self.sinks[job_key] = sink
        assert job.task is not None
        job.task.add_done_callback(lambda _: self._track(self._finished(job_key)))
        if pulled.key in self.cancelled:  # interrupted while its inputs were fetched
            with contextlib.suppress(GatewayError):
                await self.runner.interrupt(job_key)

    async def _finished(self, job_key: JobKey) -> None:
        pulled = self.running.pop(job_key, None)
        self.sinks.pop(job_key, None)
        self.overtaken.discard(job_key)
        request_id = job_key[1]
        if pulled is None:
            return
        # Unreachable Redis: the job stays pending, and is taken over (or found ended) later.
        with contextlib.suppress(RedisError, OSError):
            if self.abandoning:  # out of time at shutdown: another gateway runs it again
                await self.store.release(pulled)
                log.warning("job %s: handed back to the fleet's queue at shutdown", request_id)
            else:
                await self.store.ack(pulled)

    def _track(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _redeliver(self, key: str, state: dict[str, str]) -> None:
        """Deliver the webhooks of a job whose outcome was recorded by a gateway that stopped
        before they went out: at least once, with the same webhook ids, for receivers to
        drop a repeat."""
        spec = spec_of(state)
        record = await RemoteRecord.load(self.store, key)
        if record is None:
            return
        log.warning("job %s: delivering the webhooks of a gateway that stopped", record.id)
        error = error_from_body(record.error_status, record.error) if record.error else None
        await deliver_ending(self.sender, spec, record.result, error)

    async def _fail_broken(self, pulled: Pulled) -> None:
        error = GatewayError("internal error while starting the job; see the gateway's log")
        with contextlib.suppress(RedisError, OSError):
            await self._record(pulled.key, split_key(pulled.key)[1], None, error)
            await self.store.ack(pulled)

    async def _end_unstarted(
        self, pulled: Pulled, spec: dict[str, Any], error: GatewayError
    ) -> None:
        """A job that never ran here ends with this error; its webhooks learn it, once."""
        log.warning("job %s failed: %s %s: %s", spec["id"], error.status, error.code, error.message)
        if await self._record(pulled.key, spec["id"], None, error):
            await deliver_ending(self.sender, spec, None, error)
        await self.store.ack(pulled)

    # -- outcomes -------------------------------------------------------------------------------
    async def record_outcome(
        self, job: Job, result: dict[str, Any] | None, error: GatewayError | None
    ) -> tuple[dict[str, Any] | None, GatewayError | None] | None:
        """The runner's hook before it delivers a job's webhooks: record the outcome in Redis,
        once. What to deliver, or None when another gateway recorded it first (or this one is
        leaving the job to others). A job this gateway did not take from the fleet (the
        warmup) is delivered as it is."""
        pulled = self.running.get(job.key)
        if pulled is None:
            return result, error
        sink = self.sinks.get(job.key)
        if sink is not None:
            await sink.close()
        if self.abandoning:
            return None
        if (
            result is not None
            and sum(len(i) for i in result.get("images", [])) > self.max_result_bytes
        ):
            error, result = (
                ResultTooLarge(
                    f"the outputs are larger than FLEET_MAX_RESULT_MB "
                    f"({self.max_result_bytes / 2**20:g} MB), the most that travels through the "
                    "fleet's queue: have them stored with `s3` or `http_upload` instead"
                ),
                None,
            )
        return (result, error) if await self._record(pulled.key, job.id, result, error) else None

    async def _record(
        self, key: str, request_id: str, result: dict[str, Any] | None, error: GatewayError | None
    ) -> bool:
        while True:  # Redis may be away for a while: the outcome waits for it
            try:
                if error is None:
                    assert result is not None
                    return await self.store.finish(key, "succeeded", "complete", result)
                status = "interrupted" if error.code == "interrupted" else "failed"
                body = error.body()
                return await self.store.finish(
                    key,
                    status,
                    "failed",
                    {"id": request_id, **body},
                    {**body, "status": error.status},
                )
            except (RedisError, OSError) as e:
                if self.abandoning:
                    return False
                self.store.reachability.failed(e)
                await asyncio.sleep(RETRY_S)

    # -- keeping jobs ---------------------------------------------------------------------------
    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.visibility_ms / 3000)
            ids = [p.message_id for p in [*self.running.values(), *self.starting.values()]]
            try:
                lost = await self.store.heartbeat(self.consumer, ids)
            except (RedisError, OSError) as e:
                self.store.reachability.failed(e)
                continue
            for job_key, pulled in self.running.items():
                if pulled.message_id in lost and job_key not in self.overtaken:
                    self.overtaken.add(job_key)  # both run it; the first outcome counts
                    log.warning("job %s: taken over by another gateway while it ran here "
                                "(Redis was out of reach longer than JOB_VISIBILITY_TIMEOUT_S)",
                                job_key[1])  # fmt: skip

    async def _interrupt(self, key: str) -> None:
        if key in self.starting:
            self.cancelled.add(key)  # interrupted as soon as it has started
        for job_key, pulled in list(self.running.items()):
            if pulled.key == key:
                with contextlib.suppress(GatewayError):
                    await self.runner.interrupt(job_key)
