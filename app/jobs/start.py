"""A job's start: accepted, prepared, placed on an instance and submitted, or nothing at all.

Each step of a start takes something: the id (`preparing`, then `active`: the key's max_jobs and
the queue depth count it), the downloaded models it holds, its input folder, an instance's slot
in the scheduler, a tracker waiter and its prompt id, its task. A step may fail in any way: a
GatewayError (ComfyUI refused the graph, a URL cannot be fetched), a bug (a plain ValueError),
or a cancellation. Whatever fails, the start gives back everything taken so far before it
raises, so a failed start never leaves a job that holds capacity; an unexpected exception is
logged and answered as a 500 GatewayError. The job runner (app.jobs.runner) runs what started.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

from app.comfy.graph import Graph, check_graph, models_of, node_names, unique_prefixes
from app.comfy.instance import ComfyInstance
from app.core.addresses import AddressPolicy
from app.core.errors import Conflict, GatewayError
from app.core.keys import owner_label
from app.core.logs import bind_request_id
from app.core.options import JobOptions
from app.core.outcome import JobOutcome
from app.jobs.destinations import check_destinations
from app.jobs.history import JobHistory
from app.jobs.inputs import InputFiles, JobInputs
from app.jobs.job import Job
from app.jobs.progress_hooks import ProgressHooks
from app.jobs.records import JobEvent, JobKey, JobRecord
from app.jobs.scheduler import Scheduler
from app.models.cache import Hold
from app.models.store import ModelStore

log = logging.getLogger(__name__)


class JobStart:
    """The JobRunner's start path (a mixin: the runner provides the state below and `_run`)."""

    scheduler: Scheduler[ComfyInstance]
    inputs: InputFiles
    history: JobHistory
    addresses: AddressPolicy
    models: ModelStore
    active: dict[JobKey, Job]
    preparing: set[JobKey]
    by_prompt: dict[str, JobKey]
    tasks: set[asyncio.Task[JobOutcome]]
    progress: ProgressHooks | None  # sends progress webhooks; None: a runner without them
    preview_max_per_s: float = 4.0  # PREVIEW_MAX_PER_S

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
        try:
            return await self._start(
                request_id, graph, options or JobOptions(), owner, echo_input, workflow, only,
                listener,
            )  # fmt: skip
        except GatewayError:
            raise
        except Exception as e:
            log.exception("job %s: unexpected error while starting it", request_id)
            raise GatewayError(
                "internal error while starting the job (nothing of it was kept); see the "
                "gateway's log"
            ) from e

    async def _start(
        self,
        request_id: str,
        graph: Graph,
        options: JobOptions,
        owner: str | None,
        echo_input: dict[str, Any] | None,
        workflow: str,
        only: ComfyInstance | None,
        listener: Callable[[JobEvent, JobRecord], None] | None,
    ) -> Job:
        check_graph(graph)
        key = (owner, request_id)
        if key in self.active or key in self.preparing:
            raise Conflict(f"a job with id {request_id!r} is already running", location="id")
        # Held from here, before the first await: DNS and downloads take a while, and the job
        # counts against its key's max_jobs from the moment the door let it in.
        self.preparing.add(key)
        held: Hold | None = None
        inputs: JobInputs | None = None
        job: Job | None = None
        try:
            await check_destinations(options, self.addresses)
            # Model URLs become files first; the job holds its models until its task ends.
            graph, held = await self.models.prepare(graph, options, owner)
            graph, inputs = await self.inputs.prepare(graph, uuid.uuid4().hex, self._uploads_via())
            record = JobRecord(request_id, "", workflow, owner=owner)
            record.preview_max_per_s = self.preview_max_per_s
            if listener is not None:
                record.listeners.append(listener)
            job = Job(record, graph, options, echo_input, inputs, models_of(graph))
            self._follow_progress(job)
            job.rank = self.scheduler.rank(options.priority, job.started)
            self.active[key] = job
            self.preparing.discard(key)
            record.emit("queued", {"id": request_id})
            instance = self.scheduler.try_place(job.slot, job.models, only=only)
            if instance is not None:
                await self._submit(job, instance)
            task = asyncio.create_task(self._run(job, only), name=f"job-{request_id}")
            job.task = task
            self.history.add(record)
        except BaseException:
            await self._give_back(key, job, held, inputs)
            raise
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        task.add_done_callback(lambda _: held.release())
        return job

    def _follow_progress(self, job: Job) -> None:
        """The job's progress_webhook hears of its start and progress (app.jobs.progress_hooks)."""
        url, owner = job.options.progress_webhook, job.record.owner
        if url is None or self.progress is None:
            return
        label = owner_label(owner) if owner is not None else None
        feed = self.progress.feed(str(url), job.id, lambda: job.prompt, key_name=label)
        job.record.listeners.append(feed.on_event)

    async def _run(self, job: Job, only: ComfyInstance | None) -> JobOutcome:
        raise NotImplementedError  # the JobRunner's: the job from its start to its outcome

    def _uploads_via(self) -> Any:
        """A client of a running instance: input files go to the folder the instances share."""
        running = [i for i in self.scheduler.instances if i.process.running]
        return (running or self.scheduler.instances)[0].client

    def _task_done(self, task: asyncio.Task[JobOutcome]) -> None:
        self.tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the outcome was recorded and delivered already

    async def _give_back(
        self, key: JobKey, job: Job | None, held: Hold | None, inputs: JobInputs | None
    ) -> None:
        """Everything a failed start took, at once; then, best effort, the prompt it queued."""
        self.preparing.discard(key)
        if held is not None:
            held.release()
        if job is None:
            if inputs is not None:
                self.inputs.remove(inputs)
            return
        if job.task is not None:
            job.task.cancel()  # created, never started: none of it ran
        queued = job.waiter if job.waiter is not None and job.waiter.submitted else None
        instance = job.instance
        self._release(job)
        if queued is not None and instance is not None:
            await take_back(instance, queued.prompt_id)

    async def _submit(self, job: Job, instance: ComfyInstance) -> None:
        """One attempt: the job's graph, with save prefixes of its own, to this instance."""
        prompt_id = str(uuid.uuid4())  # ComfyUI 0.33+ takes only the canonical form
        job.instance, job.attempts = instance, job.attempts + 1
        queued = False
        try:
            job.submitted = unique_prefixes(job.graph, prompt_id)
            job.waiter = instance.tracker.watch(prompt_id)
            job.waiter.on_event = job.record.on_comfy_event
            job.waiter.on_preview = job.record.on_preview
            job.record.node_names = node_names(job.submitted)
            job.record.prompt_id, job.record.instance = prompt_id, instance.index
            self.by_prompt[prompt_id] = job.key
            of = f" of key {job.record.owner}" if job.record.owner is not None else ""
            log.info(
                "job %s%s: submitting as prompt %s to %s (%d nodes)",
                job.id, of, prompt_id, instance.name, len(job.submitted),
            )  # fmt: skip
            # ComfyUI's queue runs the lowest number first: ours is the job's rank.
            await instance.client.submit(
                job.submitted,
                prompt_id=prompt_id,
                client_id=instance.tracker.client_id,
                extra_data=job.options.comfy_extra_data(),
                number=job.rank,
            )
            queued = True
            instance.tracker.submitted(job.waiter)
        except BaseException:
            self._unplace(job)
            if queued:
                await take_back(instance, prompt_id)
            raise

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


async def take_back(instance: ComfyInstance, prompt_id: str) -> None:
    """Best effort: out of ComfyUI's queue, a prompt whose job failed to start after all."""
    try:
        await instance.client.cancel(prompt_id)
    except Exception as e:  # the job's own error is what the caller learns
        log.warning("could not take prompt %s back from %s: %r", prompt_id, instance.name, e)
