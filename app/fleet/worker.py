"""FleetWorker: the running side of the fleet. Takes a job from Redis whenever one of this
gateway's ComfyUI instances is free (app.fleet.next_job: where it looks), runs it with the local
job runner as its owner's (the API key that made it), mirrors its events into Redis, and has its
outcome recorded once (app.fleet.outcomes). Whether a pulled job starts here at all is
app.fleet.admit's. Whatever fails while a pulled job is started, nothing stays taken: the job
runs, or ends with a reported failure, or (Redis out of reach) stays pending for a takeover.

A job stays pending in the stream while it runs and is heartbeated (its idle time reset); when
a gateway dies, its jobs go idle and another gateway takes them over after
JOB_VISIBILITY_TIMEOUT_S, up to JOB_MAX_ATTEMPTS starts. A message acts on its job only while it
is the job's current generation and this gateway holds it (app.fleet.stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from app.core.errors import GatewayError
from app.core.options import JobOptions
from app.core.outcome import JobOutcome
from app.core.settings import Settings
from app.fleet.admit import admit
from app.fleet.next_job import NextJob
from app.fleet.outcomes import Outcomes, internal_error
from app.fleet.sink import EventSink
from app.fleet.store import FleetStore
from app.fleet.stream import Pulled
from app.jobs.job import Job
from app.jobs.runner import JobRunner
from app.jobs.scheduler import Scheduler
from app.jobs.webhooks import WebhookSender

log = logging.getLogger(__name__)
RETRY_S = 1.0  # between attempts to reach Redis


@dataclass(eq=False)
class Running:
    """A job of the fleet's that this gateway runs."""

    pulled: Pulled
    spec: dict[str, Any]
    job: Job
    sink: EventSink
    settled: bool = False  # its outcome was recorded (or left to others) by the runner's hook
    acked: bool = False  # acknowledged with its outcome (no webhooks to wait for)


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
        self.visibility_ms = int(settings.job_visibility_timeout_s * 1000)
        self.max_attempts = settings.job_max_attempts
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.outcomes = Outcomes(store, sender, self.consumer)
        self.next_job = NextJob(store, self.consumer, self.visibility_ms, self.max_attempts)
        # By message id, the job's generation: the same id may come again once its job ended.
        self.starting: dict[str, Pulled] = {}  # until it runs (or ended)
        self.running: dict[str, Running] = {}  # until its task is done and its message acked
        self.cancelled: set[str] = set()  # interrupted while being started
        self.overtaken: set[str] = set()  # running here, and taken over by another gateway
        self.pulling = False  # from start() until stop_pulling()
        self.reserved = 0  # free instances held for jobs being accepted here (reserve())
        self._tasks: list[asyncio.Task[None]] = []
        self._finishing: set[asyncio.Task[None]] = set()  # starts, and acks after a job's end
        runner.outcome = self.record_outcome
        store.signals.on_cancel = self._interrupt

    def abandon(self) -> None:
        """Shutting down past the grace period: running jobs are left to other gateways."""
        self.outcomes.abandoning = True

    def start(self) -> None:
        self.pulling = True
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
        self.outcomes.closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- taking jobs ----------------------------------------------------------------------------
    async def _pull(self) -> None:
        while self.pulling:
            try:
                await self._pull_one()
            except (RedisError, OSError) as e:
                self.store.reachability.failed(e)
                await asyncio.sleep(RETRY_S)
            except Exception:  # a bug must not stop this gateway taking jobs
                log.exception("fleet: pulling a job failed")
                await asyncio.sleep(RETRY_S)

    def _has_room(self) -> bool:
        """A free instance that no job being started or accepted here has claimed yet."""
        free = sum(1 for i in self.scheduler.instances if self.scheduler.free(i))
        return free > len(self.starting) + self.reserved

    def reserve(self) -> str | None:
        """This gateway's consumer name, for the enqueue of a job accepted here to hand it over,
        when it has room for it (held until take() or unreserve()); else None."""
        if not self.pulling or self.outcomes.abandoning or not self._has_room():
            return None
        self.reserved += 1
        return self.consumer

    def unreserve(self) -> None:
        self.reserved -= 1

    def take(self, pulled: Pulled) -> None:
        """Start a job its enqueue gave this gateway (reserve()), as a pulled one."""
        self.reserved -= 1
        self.starting[pulled.message_id] = pulled
        self._track(self._start(pulled))

    def runs(self, generation: str) -> bool:
        """Whether this gateway starts or runs the job of this message, its outcome not yet
        recorded (or left to others): it settles the job's followers here, or wakes them."""
        entry = self.running.get(generation)
        return generation in self.starting or (entry is not None and not entry.settled)

    async def _pull_one(self) -> None:
        if not self._has_room():  # each job being started (or accepted) takes an instance
            await self.scheduler.wait_free(timeout_s=0.2 if self.starting or self.reserved else 1)
            return
        pulled = await self.next_job.find()
        if pulled is None or pulled.message_id in {*self.starting, *self.running}:
            return  # nothing came, or our own job back from a late heartbeat
        if not self.pulling:
            await self.store.release(pulled, self.consumer)  # taken as the gateway began to stop
            return
        # Started aside: fetching its inputs may take a while, and another instance of this
        # gateway may be free for the next job meanwhile.
        self.starting[pulled.message_id] = pulled
        self._track(self._start(pulled))

    async def _start(self, pulled: Pulled) -> None:
        """Start a pulled job here, or end it if it cannot be started. Redis errors leave it
        pending; the runner's refusal, or any error of its, ends it."""
        try:
            spec = await admit(self.store, self.outcomes, pulled, self.consumer, self.max_attempts)
            if spec is not None:
                # Heartbeated from the pull on (self.starting): the runner downloads the job's
                # models and inputs before it places the job, which may take longer than the
                # visibility timeout.
                await self._launch(pulled, spec)
        except (RedisError, OSError) as e:  # left pending: taken over once Redis is back
            self.store.reachability.failed(e)
            log.warning("job %s: left for another start: Redis failed under it (%s)", pulled.key, e)
        except Exception:  # a bug must not stop the gateway's work; the job ends, reported
            log.exception("fleet: could not start job %s", pulled.key)
            await self.outcomes.fail_broken(pulled, None, "starting")
        finally:
            self.starting.pop(pulled.message_id, None)
            self.cancelled.discard(pulled.message_id)
            if pulled.message_id not in self.running:  # it does not run here: read it back
                self.store.signals.wake(pulled.key)

    async def _launch(self, pulled: Pulled, spec: dict[str, Any]) -> None:
        """Hand the job to the runner; from then on the runner ends it, and _finished follows."""
        sink = EventSink(self.store, pulled, self.consumer)
        try:
            job = await self.runner.start(
                spec["id"],
                spec["graph"],
                JobOptions.model_validate(spec["options"]),
                owner=spec.get("owner"),
                echo_input=spec.get("echo_input"),
                workflow=spec.get("workflow", "prompt"),
                listener=sink.offer,
            )
        except GatewayError as e:  # refused by ComfyUI, a model or input that cannot be fetched
            sink.abort()
            await self.outcomes.end_unstarted(pulled, spec, e)
            return
        except Exception:  # the runner gave back what it took; the job ends, reported
            sink.abort()
            log.exception("fleet: job %s could not be started", spec["id"])
            await self.outcomes.end_unstarted(pulled, spec, internal_error("starting"))
            return
        except BaseException:
            sink.abort()
            raise
        job.record.preview_listeners.append(sink.offer_preview)
        entry = Running(pulled, spec, job, sink)
        self.running[pulled.message_id] = entry
        assert job.task is not None
        job.task.add_done_callback(lambda _: self._track(self._finished(entry)))
        if pulled.message_id in self.cancelled:  # interrupted while its inputs were fetched
            await self._stop(job)

    async def _finished(self, entry: Running) -> None:
        """The job's task is done: its message is acknowledged (or handed back at shutdown);
        a job whose outcome the runner's hook could not record (a bug) ends failed here."""
        pulled = entry.pulled
        try:
            if not entry.settled and not self.outcomes.abandoning:
                await self.outcomes.fail_broken(pulled, entry.spec, "finishing")
            elif self.outcomes.abandoning:  # out of time at shutdown: another gateway runs it again
                with contextlib.suppress(RedisError, OSError):
                    await self.store.release(pulled, self.consumer)
                log.warning("job %s: handed back to the fleet's queue at shutdown", entry.job.id)
            elif not entry.acked:
                await self.outcomes.ack(pulled)
        finally:
            self.running.pop(pulled.message_id, None)
            self.overtaken.discard(pulled.message_id)

    def _track(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    # -- outcomes -------------------------------------------------------------------------------
    async def record_outcome(self, job: Job, outcome: JobOutcome) -> JobOutcome | None:
        """The runner's hook before it delivers a job's webhooks: record the outcome in Redis,
        once. What to deliver, or None when another gateway recorded it first (or this one is
        leaving the job to others). A job this gateway did not take from the fleet (the
        warmup) is delivered as it is."""
        entry = next((r for r in self.running.values() if r.job is job), None)
        if entry is None:
            return outcome
        if self.outcomes.abandoning:
            await entry.sink.close()
            entry.settled = True
            return None
        ack = not (job.options.webhook or job.options.webhook_v2)  # none to wait for
        pulled = entry.pulled
        with self.store.signals.recording(pulled.key, pulled.message_id, outcome) as settle:
            await settle()  # its followers here answer first (docs/deployment.md)
            events = await entry.sink.close()  # those not written yet go with the outcome
            recorded = await self.outcomes.record(pulled, outcome, events, ack)
            entry.settled, entry.acked = True, recorded and ack
        return outcome if recorded else None

    # -- keeping jobs ---------------------------------------------------------------------------
    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.visibility_ms / 3000)
            try:
                lost = await self.store.heartbeat(self.consumer, [*self.running, *self.starting])
            except (RedisError, OSError) as e:
                self.store.reachability.failed(e)
                continue
            except Exception:  # a bug must not stop the heartbeat: every job would be taken over
                log.exception("fleet: heartbeat failed")
                continue
            for message_id, entry in self.running.items():
                if message_id in lost and not entry.acked and message_id not in self.overtaken:
                    self.overtaken.add(message_id)  # both run it; the first outcome counts
                    log.warning("job %s: taken over by another gateway while it ran here "
                                "(Redis was out of reach longer than JOB_VISIBILITY_TIMEOUT_S)",
                                entry.job.id)  # fmt: skip

    async def _interrupt(self, key: str) -> None:
        for message_id, pulled in list(self.starting.items()):
            if pulled.key == key:
                self.cancelled.add(message_id)  # interrupted as soon as it has started
        for entry in list(self.running.values()):
            if entry.pulled.key == key:
                await self._stop(entry.job)

    async def _stop(self, job: Job) -> None:
        try:
            await self.runner.interrupt(job.key)
        except GatewayError:
            pass  # it ended meanwhile
        except Exception:  # the job runs on, and ends as it would have
            log.exception("fleet: job %s could not be interrupted", job.id)
