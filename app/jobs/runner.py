"""One job end to end: resolve its model URLs, rewrite the graph, place it on an instance,
submit, wait, read the outputs, clean up, deliver.

Model URLs are resolved here, where the job runs (in a fleet: on the gateway that took it from
the queue, not the one that accepted it): each is downloaded into this gateway's model cache
before the job is placed, and the job holds its downloaded models, so none is evicted, until its
task ends.

Every job runs in a task of its own, once its start (app.jobs.start) has taken everything it
needs, or given all of it back. A job that finds an instance free is submitted before
start() returns, so ComfyUI's refusal of the graph is the request's 400; a job that waits in the
gateway's queue (a busy pool) learns it when it is placed, as its outcome. A synchronous request
awaits the task, a webhook request is answered 202 at once, an SSE request follows the job's
record. When the instance a job runs on dies, the job runs again on another one (JOB_RETRIES);
however it ends, its record and its webhooks learn exactly one outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from app.comfy.graph import Graph
from app.comfy.instance import ComfyInstance
from app.core.addresses import AddressPolicy
from app.core.errors import (
    ComfyUnavailable,
    GatewayError,
    Interrupted,
    NotFound,
    PromptTimeout,
)
from app.core.keys import owner_label
from app.core.metrics import MetricsHooks
from app.core.outcome import JobOutcome
from app.jobs.finish import Finisher
from app.jobs.history import JobHistory
from app.jobs.inputs import InputFiles
from app.jobs.job import Job
from app.jobs.progress_hooks import ProgressHooks
from app.jobs.records import JobKey
from app.jobs.scheduler import Scheduler
from app.jobs.start import JobStart
from app.jobs.uploads import Uploader
from app.jobs.webhooks import WebhookSender, deliver_job_end
from app.models.store import ModelStore

log = logging.getLogger(__name__)
# Asked with a job's outcome before its webhooks go out: the outcome to deliver, or None.
OutcomeHook = Callable[[Job, JobOutcome], Awaitable[JobOutcome | None]]


class JobRunner(JobStart):
    """Runs jobs on the instances of the pool and knows which are in flight; starts them
    through JobStart (app.jobs.start)."""

    def __init__(
        self,
        scheduler: Scheduler[ComfyInstance],
        inputs: InputFiles,
        finisher: Finisher,
        history: JobHistory,
        sender: WebhookSender,
        uploader: Uploader,
        addresses: AddressPolicy,
        models: ModelStore,
        *,
        timeout_s: float | None,
        retries: int,
        progress: ProgressHooks | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.inputs = inputs
        self.finisher = finisher
        self.history = history
        self.sender = sender
        self.uploader = uploader
        self.addresses = addresses
        self.models = models
        self.timeout_s = timeout_s
        self.progress = progress
        self.retries = retries if scheduler.pooled else 0  # "on another instance": a pool's
        self.metrics = MetricsHooks()  # the Gateway hands in its GatewayMetrics
        # Asked before a job's webhooks go out (a fleet records the outcome in Redis, once):
        # what to deliver, or None to deliver nothing (another gateway did).
        self.outcome: OutcomeHook | None = None
        # By (owner, request id): two keys may both run `order-123`.
        self.active: dict[JobKey, Job] = {}  # until ComfyUI is done with it
        self.preparing: set[JobKey] = set()  # jobs whose models and inputs are being fetched
        self.by_prompt: dict[str, JobKey] = {}  # ComfyUI prompt id -> job, same lifetime
        self.tasks: set[asyncio.Task[JobOutcome]] = set()  # until deliveries are done

    async def _run(self, job: Job, only: ComfyInstance | None) -> JobOutcome:
        """The job's task: run it, end its record and deliver its webhooks with its one
        outcome; return it, or raise its error."""
        try:
            try:
                outcome = await self._attempts(job, only)
            finally:
                self._release(job)
        except GatewayError as e:
            log.warning("job %s failed: %s %s: %s", job.id, e.status, e.code, e.message)
            outcome = JobOutcome.failed(job.id, job.prompt, e)
        except Exception:
            log.exception("job %s: unexpected error", job.id)
            error = GatewayError("internal error while finishing the job; see the gateway's log")
            outcome = JobOutcome.failed(job.id, job.prompt, error)
        job.record.end(outcome)
        await self._deliver(job, outcome)
        if outcome.error is not None:
            raise outcome.error
        return outcome

    async def _attempts(self, job: Job, only: ComfyInstance | None) -> JobOutcome:
        """Place, submit and finish the job; again on another instance if its instance died."""
        deadline = job.started + self.timeout_s if self.timeout_s else None
        avoid: ComfyInstance | None = None
        while True:
            if job.instance is None:
                placed = self.scheduler.place(
                    job.slot,
                    job.models,
                    only=only,
                    avoid=avoid,
                    rank=job.rank,
                    priority=job.options.priority,
                )
                instance = await self._in_time(placed, deadline, job)
                await self._submit(job, instance)
            try:
                return await self.finisher.finish(job, deadline)
            except ComfyUnavailable as e:
                if not e.instance_lost:
                    raise
                avoid = job.instance
                self._unplace(job)
                if job.attempts > self.retries:
                    raise
                log.warning(
                    "job %s: %s; running it again on another instance (attempt %d of %d)",
                    job.id, e.message, job.attempts + 1, self.retries + 1,
                )  # fmt: skip
                job.record.emit("queued", {"id": job.id, "attempt": job.attempts + 1})

    async def _in_time(self, waiting: Any, deadline: float | None, job: Job) -> Any:
        """Await `waiting` until the job's deadline; past it the job has timed out."""
        try:
            return await asyncio.wait_for(
                waiting, None if deadline is None else max(deadline - time.monotonic(), 0)
            )
        except TimeoutError:
            raise PromptTimeout.after(self.timeout_s) from None

    async def _deliver(self, job: Job, outcome: JobOutcome) -> None:
        self.metrics.job_ended(job.record, job.started)  # every outcome passes here, once
        if self.outcome is not None:
            decided = await self.outcome(job, outcome)
            if decided is None:
                return
            outcome = decided
        if job.options.webhook or job.options.webhook_v2:
            webhook, webhook_v2 = job.options.webhook, job.options.webhook_v2
            owner = job.record.owner
            await deliver_job_end(
                self.sender,
                webhook=str(webhook) if webhook else None,
                webhook_v2=str(webhook_v2) if webhook_v2 else None,
                graph=job.prompt,
                outcome=outcome,
                key_name=owner_label(owner) if owner is not None else None,
            )

    async def run(
        self,
        request_id: str,
        graph: Graph,
        workflow: str = "prompt",
        only: ComfyInstance | None = None,
        owner: str | None = None,
    ) -> JobOutcome:
        """Run a graph to completion and return its outputs, or raise a GatewayError."""
        job = await self.start(request_id, graph, owner=owner, workflow=workflow, only=only)
        assert job.task is not None
        return await asyncio.shield(job.task)

    def jobs_of(self, owner: str | None) -> int:
        """How many jobs of this owner are queued or running (or fetching their inputs)."""
        return sum(o == owner for o, _ in self.active) + sum(o == owner for o, _ in self.preparing)

    async def interrupt(self, key: JobKey) -> None:
        """Cancel a queued or running job; its own request then answers 409 `interrupted`."""
        job = self.active.get(key)
        if job is None:
            raise NotFound(f"no queued or running job has id {key[1]!r}", location="id")
        if self.scheduler.withdraw(job.slot):
            return  # it was waiting in the gateway's queue: it ends there
        # Held here: while the cancel is awaited the job may end, and let go of both.
        instance, waiter = job.instance, job.waiter
        if instance is not None and waiter is not None:
            await instance.client.cancel(waiter.prompt_id)
            instance.tracker.settle(
                waiter.prompt_id, Interrupted("the job was interrupted on request")
            )

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every job has finished and delivered, at most timeout_s; True if all did."""
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=timeout_s)
            return not pending
        return True
