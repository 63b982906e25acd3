"""One job end to end: rewrite the graph, submit, wait, read the outputs, clean up, deliver.

Every job runs in a task of its own, started once ComfyUI has accepted the graph: a synchronous
request awaits that task, a webhook request is answered 202 at once, an SSE request follows the
job's record. However it ends, the job's record and its webhooks learn exactly one outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from app.comfy.client import ComfyClient
from app.comfy.events import PromptWaiter
from app.comfy.graph import Graph, check_graph, unique_prefixes
from app.comfy.tracker import PromptTracker
from app.core.addresses import AddressPolicy, AddressRefused
from app.core.errors import (
    Conflict,
    GatewayError,
    Interrupted,
    InvalidRequest,
    NotFound,
    PromptTimeout,
)
from app.core.logs import bind_request_id
from app.core.metrics import MetricsHooks
from app.core.options import JobOptions
from app.core.records import JobHistory, JobRecord
from app.core.schemas import PromptResponse, Stats, WorkflowResponse
from app.jobs.inputs import InputFiles, JobInputs
from app.jobs.outputs import OutputFile, OutputStore, output_files
from app.jobs.uploads import Uploader
from app.jobs.webhooks import WebhookSender, deliver_job_end

log = logging.getLogger(__name__)


@dataclass
class Job:
    record: JobRecord
    graph: Graph
    waiter: PromptWaiter
    options: JobOptions
    echo_input: dict[str, Any] | None
    inputs: JobInputs
    started: float = field(default_factory=time.monotonic)
    task: asyncio.Task[PromptResponse] | None = None

    @property
    def id(self) -> str:
        return self.record.id


class JobRunner:
    """Runs jobs against one ComfyUI and knows which are in flight."""

    def __init__(
        self,
        client: ComfyClient,
        tracker: PromptTracker,
        inputs: InputFiles,
        outputs: OutputStore,
        history: JobHistory,
        sender: WebhookSender,
        uploader: Uploader,
        addresses: AddressPolicy,
        *,
        timeout_s: float | None,
        keep_outputs: bool,
    ) -> None:
        self.client = client
        self.tracker = tracker
        self.inputs = inputs
        self.outputs = outputs
        self.history = history
        self.sender = sender
        self.uploader = uploader
        self.addresses = addresses
        self.timeout_s = timeout_s
        self.keep_outputs = keep_outputs
        self.metrics = MetricsHooks()  # the Gateway hands in its GatewayMetrics
        self.active: dict[str, Job] = {}  # by request id, until ComfyUI is done with it
        self.preparing: set[str] = set()  # request ids whose inputs are being fetched
        self.by_prompt: dict[str, str] = {}  # ComfyUI prompt id -> request id, same lifetime
        self.tasks: set[asyncio.Task[PromptResponse]] = set()  # until deliveries are done

    async def start(
        self,
        request_id: str,
        graph: Graph,
        options: JobOptions | None = None,
        *,
        echo_input: dict[str, Any] | None = None,
        workflow: str = "prompt",
    ) -> Job:
        """Submit a graph; ComfyUI's refusal raises here, anything later ends in the job.

        `workflow` names what built the graph (`prompt`, `sd15/txt2img`) for logs and metrics.
        """
        bind_request_id(request_id)  # every later log line of this request and its job has it
        check_graph(graph)
        options = options or JobOptions()
        await check_destinations(options, self.addresses)  # awaits DNS: before the id is taken
        if request_id in self.active or request_id in self.preparing:
            raise Conflict(f"a job with id {request_id!r} is already running", location="id")
        prompt_id = str(uuid.uuid4())  # ComfyUI 0.33+ takes only the canonical form
        self.preparing.add(request_id)  # input downloads take a while: hold the id meanwhile
        try:
            graph, inputs = await self.inputs.prepare(unique_prefixes(graph, prompt_id), prompt_id)
        finally:
            self.preparing.discard(request_id)
        record = JobRecord(request_id, prompt_id, workflow)
        waiter = self.tracker.watch(prompt_id)
        waiter.on_event = record.on_comfy_event
        job = Job(record, graph, waiter, options, echo_input, inputs)
        self.active[request_id] = job
        self.by_prompt[prompt_id] = request_id
        log.info("job %s: submitting as prompt %s (%d nodes)", request_id, prompt_id, len(graph))
        record.emit("queued", {"id": request_id})  # before: ComfyUI may start it at once
        try:
            await self.client.submit(graph, prompt_id=prompt_id, client_id=self.tracker.client_id)
        except GatewayError:
            self._release(job)
            raise
        self.tracker.submitted(waiter)
        self.history.add(record)
        job.task = asyncio.create_task(self._run(job), name=f"job-{request_id}")
        self.tasks.add(job.task)
        job.task.add_done_callback(self._task_done)
        return job

    def _task_done(self, task: asyncio.Task[PromptResponse]) -> None:
        self.tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the outcome was recorded and delivered already

    def _release(self, job: Job) -> None:
        self.inputs.remove(job.inputs)
        self.tracker.forget(job.record.prompt_id)
        self.active.pop(job.id, None)
        self.by_prompt.pop(job.record.prompt_id, None)

    async def _run(self, job: Job) -> PromptResponse:
        record = job.record
        try:
            try:
                result = await self._finish(job)
            finally:
                self._release(job)
        except GatewayError as e:
            log.warning("job %s failed: %s %s: %s", job.id, e.status, e.code, e.message)
            record.fail(e.body(), interrupted=isinstance(e, Interrupted))
            await self._deliver(job, error=e.body())
            raise
        except Exception as e:
            log.exception("job %s: unexpected error", job.id)
            error = GatewayError("internal error while finishing the job; see the gateway's log")
            record.fail(error.body())
            await self._deliver(job, error=error.body())
            raise error from e
        body = result.model_dump(mode="json")
        record.succeed(body)
        await self._deliver(job, result=body)
        return result

    async def _deliver(
        self, job: Job, *, result: dict[str, Any] | None = None, error: dict[str, Any] | None = None
    ) -> None:
        self.metrics.job_ended(job.record, job.started)  # every outcome passes here, once
        if job.options.webhook or job.options.webhook_v2:
            webhook, webhook_v2 = job.options.webhook, job.options.webhook_v2
            await deliver_job_end(
                self.sender,
                webhook=str(webhook) if webhook else None,
                webhook_v2=str(webhook_v2) if webhook_v2 else None,
                job_id=job.id,
                graph=job.graph,
                result=result,
                error=error,
            )

    async def _finish(self, job: Job) -> PromptResponse:
        """Wait for ComfyUI, read and remove the outputs, and build the response."""
        waiter = job.waiter
        files: list[OutputFile] = []
        try:
            outputs = await self._wait(waiter)
            executed = time.monotonic()
            files = output_files(outputs)
            contents = await self._collect(files, job.options)
        finally:
            if not self.keep_outputs:
                self.outputs.remove(files or output_files(waiter.outputs))
        done = time.monotonic()
        exec_start = waiter.started_at or executed
        stats = Stats(
            queue=_ms(exec_start - job.started),
            execution=_ms(executed - exec_start),
            postprocess=_ms(done - executed),
            total=_ms(done - job.started),
        )
        log.info("job %s: %d outputs in %.0f ms", job.id, len(files), stats.total)
        fields = dict(
            id=job.id,
            prompt=job.graph,
            images=[content for _, content in contents],
            filenames=[name for name, _ in contents],
            stats=stats,
        )
        if job.echo_input is not None:
            return WorkflowResponse(**fields, input=job.echo_input)
        return PromptResponse(**fields)

    async def _collect(self, files: list[OutputFile], options: JobOptions) -> list[tuple[str, str]]:
        """(name, content) per file: base64, or where the upload put it."""
        target = options.upload
        if target is None:
            return await self.outputs.read_all(files, options.convert_output)
        stored = []
        for file in files:  # one at a time: never more than one output in memory
            name, data = await self.outputs.read(file, options.convert_output)
            stored.append((name, await self.uploader.store(target, name, data)))
        return stored

    async def _wait(self, waiter: PromptWaiter) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(asyncio.shield(waiter.done), self.timeout_s)
        except TimeoutError:
            with contextlib.suppress(GatewayError):
                await self.client.cancel(waiter.prompt_id)
            raise PromptTimeout(
                f"the job ran past PROMPT_TIMEOUT_S ({self.timeout_s:g}s) and was interrupted"
            ) from None

    async def run(self, request_id: str, graph: Graph, workflow: str = "prompt") -> PromptResponse:
        """Run a graph to completion and return its outputs, or raise a GatewayError."""
        job = await self.start(request_id, graph, workflow=workflow)
        assert job.task is not None
        return await asyncio.shield(job.task)

    async def interrupt(self, request_id: str) -> None:
        """Cancel a queued or running job; its own request then answers 409 `interrupted`."""
        job = self.active.get(request_id)
        if job is None:
            raise NotFound(f"no queued or running job has id {request_id!r}", location="id")
        await self.client.cancel(job.record.prompt_id)
        self.tracker.settle(job.record.prompt_id, Interrupted("the job was interrupted on request"))

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every job has finished and delivered, at most timeout_s; True if all did."""
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=timeout_s)
            return not pending
        return True


async def check_destinations(options: JobOptions, addresses: AddressPolicy) -> None:
    """Refuse a webhook or upload URL the address policy refuses: a located 400, before the job
    exists, so nothing runs and nothing is ever sent there."""
    for location, url in options.destinations():
        try:
            await addresses.check(url)
        except AddressRefused as e:
            raise InvalidRequest(f"{location}: {e}", location=location) from None


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
