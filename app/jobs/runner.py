"""One job end to end: resolve its model URLs, rewrite the graph, place it on an instance,
submit, wait, read the outputs, clean up, deliver.

Model URLs are resolved here, where the job runs (in a fleet: on the gateway that took it from
the queue, not the one that accepted it): each is downloaded into this gateway's model cache
before the job is placed, and the job holds its downloaded models, so none is evicted, until its
task ends.

Every job runs in a task of its own. A job that finds an instance free is submitted before
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
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from app.comfy.graph import Graph, check_graph, models_of, unique_prefixes
from app.comfy.instance import ComfyInstance
from app.core.addresses import AddressPolicy, check_destinations
from app.core.errors import (
    ComfyUnavailable,
    Conflict,
    GatewayError,
    Interrupted,
    NotFound,
    PromptTimeout,
)
from app.core.keys import owner_label
from app.core.logs import bind_request_id
from app.core.metrics import MetricsHooks
from app.core.options import JobOptions
from app.core.records import JobEvent, JobHistory, JobKey, JobRecord
from app.core.schemas import PromptResponse
from app.jobs.finish import Finisher
from app.jobs.inputs import InputFiles
from app.jobs.job import Job
from app.jobs.model_store import ModelStore
from app.jobs.scheduler import Scheduler
from app.jobs.uploads import Uploader
from app.jobs.webhooks import WebhookSender, deliver_job_end

log = logging.getLogger(__name__)
Outcome = tuple[dict[str, Any] | None, GatewayError | None]  # (result body, error)
OutcomeHook = Callable[[Job, dict[str, Any] | None, GatewayError | None], Awaitable[Outcome | None]]


class JobRunner:
    """Runs jobs on the instances of the pool and knows which are in flight."""

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
        self.retries = retries if scheduler.pooled else 0  # "on another instance": a pool's
        self.metrics = MetricsHooks()  # the Gateway hands in its GatewayMetrics
        # Asked before a job's webhooks go out (a fleet records the outcome in Redis, once):
        # what to deliver, or None to deliver nothing (another gateway did).
        self.outcome: OutcomeHook | None = None
        # By (owner, request id): two keys may both run `order-123`.
        self.active: dict[JobKey, Job] = {}  # until ComfyUI is done with it
        self.preparing: set[JobKey] = set()  # jobs whose models and inputs are being fetched
        self.by_prompt: dict[str, JobKey] = {}  # ComfyUI prompt id -> job, same lifetime
        self.tasks: set[asyncio.Task[PromptResponse]] = set()  # until deliveries are done

    async def start(
        self,
        request_id: str,
        graph: Graph,
        options: JobOptions | None = None,
        *,
        owner: str | None = None,
        echo_input: dict[str, Any] | None = None,
        workflow: str = "prompt",
        only: ComfyInstance | None = None,
        listener: Callable[[JobEvent, JobRecord], None] | None = None,
    ) -> Job:
        """Accept a job; ComfyUI's refusal raises here when it is submitted at once.

        `owner` is the id of the API key that makes it (its ids are that key's); `workflow`
        names what built the graph (`prompt`, `sd15/txt2img`) for logs and metrics; `only` pins
        it to one instance (the warmup of each); `listener` hears of its events.
        """
        bind_request_id(request_id)  # every later log line of this request and its job has it
        check_graph(graph)
        options = options or JobOptions()
        key = (owner, request_id)
        if key in self.active or key in self.preparing:
            raise Conflict(f"a job with id {request_id!r} is already running", location="id")
        # Held from here, before the first await: DNS and downloads take a while, and the job
        # counts against its key's max_jobs from the moment the door let it in.
        self.preparing.add(key)
        try:
            await check_destinations(options, self.addresses)
            # Model URLs become files first; the job holds its models until its task ends.
            graph, held = await self.models.prepare(graph, options, owner)
            try:
                graph, inputs = await self.inputs.prepare(
                    graph, uuid.uuid4().hex, self._uploads_via()
                )
            except BaseException:
                held.release()
                raise
        finally:
            self.preparing.discard(key)
        record = JobRecord(request_id, "", workflow, owner=owner)
        if listener is not None:
            record.listeners.append(listener)
        job = Job(record, graph, options, echo_input, inputs, models_of(graph))
        self.active[key] = job
        record.emit("queued", {"id": request_id})
        instance = self.scheduler.try_place(job.slot, job.models, only=only)
        if instance is not None:
            try:
                await self._submit(job, instance)
            except GatewayError:
                self._release(job)
                held.release()
                raise
        self.history.add(record)
        job.task = asyncio.create_task(self._run(job, only), name=f"job-{request_id}")
        self.tasks.add(job.task)
        job.task.add_done_callback(self._task_done)
        job.task.add_done_callback(lambda _: held.release())
        return job

    def _uploads_via(self) -> Any:
        """A client of a running instance: input files go to the folder the instances share."""
        running = [i for i in self.scheduler.instances if i.process.running]
        return (running or self.scheduler.instances)[0].client

    def _task_done(self, task: asyncio.Task[PromptResponse]) -> None:
        self.tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the outcome was recorded and delivered already

    async def _submit(self, job: Job, instance: ComfyInstance) -> None:
        """One attempt: the job's graph, with save prefixes of its own, to this instance."""
        prompt_id = str(uuid.uuid4())  # ComfyUI 0.33+ takes only the canonical form
        job.instance, job.attempts = instance, job.attempts + 1
        job.submitted = unique_prefixes(job.graph, prompt_id)
        job.waiter = instance.tracker.watch(prompt_id)
        job.waiter.on_event = job.record.on_comfy_event
        job.record.prompt_id, job.record.instance = prompt_id, instance.index
        self.by_prompt[prompt_id] = job.key
        of = f" of key {job.record.owner}" if job.record.owner is not None else ""
        log.info(
            "job %s%s: submitting as prompt %s to %s (%d nodes)",
            job.id, of, prompt_id, instance.name, len(job.submitted),
        )  # fmt: skip
        try:
            await instance.client.submit(
                job.submitted, prompt_id=prompt_id, client_id=instance.tracker.client_id
            )
        except GatewayError:
            self._unplace(job)
            raise
        instance.tracker.submitted(job.waiter)

    def _unplace(self, job: Job) -> None:
        """The attempt is over: forget its prompt and free its instance for the next job."""
        if job.waiter is not None:
            assert job.instance is not None
            job.instance.tracker.forget(job.waiter.prompt_id)
            self.by_prompt.pop(job.waiter.prompt_id, None)
            if job.waiter.submitted:  # it ran there (or began to): what the instance holds now
                job.instance.jobs_run += 1
                job.instance.jobs_since_start += 1
                job.instance.models = job.models or job.instance.models
            job.waiter = None
        if job.instance is not None:
            self.scheduler.release(job.instance, job.slot)
            job.instance = None

    def _release(self, job: Job) -> None:
        self._unplace(job)
        self.inputs.remove(job.inputs)
        self.active.pop(job.key, None)

    async def _run(self, job: Job, only: ComfyInstance | None) -> PromptResponse:
        record = job.record
        try:
            try:
                result = await self._attempts(job, only)
            finally:
                self._release(job)
        except GatewayError as e:
            log.warning("job %s failed: %s %s: %s", job.id, e.status, e.code, e.message)
            record.fail(e.body(), interrupted=isinstance(e, Interrupted))
            await self._deliver(job, None, e)
            raise
        except Exception as e:
            log.exception("job %s: unexpected error", job.id)
            error = GatewayError("internal error while finishing the job; see the gateway's log")
            record.fail(error.body())
            await self._deliver(job, None, error)
            raise error from e
        body = result.model_dump(mode="json")
        record.succeed(body)
        await self._deliver(job, body, None)
        return result

    async def _attempts(self, job: Job, only: ComfyInstance | None) -> PromptResponse:
        """Place, submit and finish the job; again on another instance if its instance died."""
        deadline = job.started + self.timeout_s if self.timeout_s else None
        avoid: ComfyInstance | None = None
        while True:
            if job.instance is None:
                placed = self.scheduler.place(job.slot, job.models, only=only, avoid=avoid)
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
            raise PromptTimeout(
                f"the job ran past PROMPT_TIMEOUT_S ({self.timeout_s:g}s) and was interrupted"
            ) from None

    async def _deliver(
        self, job: Job, result: dict[str, Any] | None, failure: GatewayError | None
    ) -> None:
        self.metrics.job_ended(job.record, job.started)  # every outcome passes here, once
        if self.outcome is not None:
            decided = await self.outcome(job, result, failure)
            if decided is None:
                return
            result, failure = decided
        error = failure.body() if failure is not None else None
        if job.options.webhook or job.options.webhook_v2:
            webhook, webhook_v2 = job.options.webhook, job.options.webhook_v2
            owner = job.record.owner
            await deliver_job_end(
                self.sender,
                webhook=str(webhook) if webhook else None,
                webhook_v2=str(webhook_v2) if webhook_v2 else None,
                job_id=job.id,
                graph=job.prompt,
                result=result,
                error=error,
                key_name=owner_label(owner) if owner is not None else None,
            )

    async def run(
        self,
        request_id: str,
        graph: Graph,
        workflow: str = "prompt",
        only: ComfyInstance | None = None,
        owner: str | None = None,
    ) -> PromptResponse:
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
