"""One job end to end: rewrite the graph, submit, wait, read the outputs, clean up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from app.comfy.client import ComfyClient
from app.comfy.tracker import PromptTracker, PromptWaiter
from app.errors import Conflict, GatewayError, Interrupted, NotFound, PromptTimeout
from app.media import OutputStore, output_files, unique_prefixes
from app.schemas import PromptResponse, Stats

log = logging.getLogger(__name__)

Graph = dict[str, dict[str, Any]]


@dataclass
class Job:
    id: str
    prompt_id: str
    waiter: PromptWaiter


class JobRunner:
    """Runs jobs against one ComfyUI and knows which are in flight."""

    def __init__(
        self,
        client: ComfyClient,
        tracker: PromptTracker,
        outputs: OutputStore,
        *,
        timeout_s: float | None,
        keep_outputs: bool,
    ) -> None:
        self.client = client
        self.tracker = tracker
        self.outputs = outputs
        self.timeout_s = timeout_s
        self.keep_outputs = keep_outputs
        self.active: dict[str, Job] = {}
        self.idle = asyncio.Event()
        self.idle.set()

    async def run(self, request_id: str, graph: Graph) -> PromptResponse:
        """Run a graph to completion and return its outputs, or raise a GatewayError."""
        if request_id in self.active:
            raise Conflict(f"a job with id {request_id!r} is already running", location="id")
        started = time.monotonic()
        prompt_id = uuid.uuid4().hex
        graph = unique_prefixes(graph, prompt_id)
        waiter = self.tracker.watch(prompt_id)
        self.active[request_id] = Job(request_id, prompt_id, waiter)
        self.idle.clear()
        log.info("job %s: submitting as prompt %s (%d nodes)", request_id, prompt_id, len(graph))
        try:
            await self.client.submit(graph, prompt_id=prompt_id, client_id=self.tracker.client_id)
            self.tracker.submitted(waiter)
            outputs = await self._wait(request_id, waiter)
            executed = time.monotonic()
            files = output_files(outputs)
            try:
                contents = await self.outputs.read_all(files)
            finally:
                if not self.keep_outputs:
                    self.outputs.remove(files)
        except GatewayError as e:
            log.warning("job %s failed: %s %s: %s", request_id, e.status, e.code, e.message)
            if not self.keep_outputs:
                self.outputs.remove(output_files(waiter.outputs))
            raise
        finally:
            self.tracker.forget(prompt_id)
            del self.active[request_id]
            if not self.active:
                self.idle.set()
        done = time.monotonic()
        exec_start = waiter.started_at or executed
        stats = Stats(
            queue=_ms(exec_start - started),
            execution=_ms(executed - exec_start),
            postprocess=_ms(done - executed),
            total=_ms(done - started),
        )
        log.info("job %s: %d outputs in %.0f ms", request_id, len(files), stats.total)
        return PromptResponse(
            id=request_id,
            prompt=graph,
            images=contents,
            filenames=[f.filename for f in files],
            stats=stats,
        )

    async def _wait(self, request_id: str, waiter: PromptWaiter) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(asyncio.shield(waiter.done), self.timeout_s)
        except TimeoutError:
            with contextlib.suppress(GatewayError):
                await self.client.cancel(waiter.prompt_id)
            raise PromptTimeout(
                f"the job ran past PROMPT_TIMEOUT_S ({self.timeout_s:g}s) and was interrupted"
            ) from None

    async def interrupt(self, request_id: str) -> None:
        """Cancel a queued or running job; its own request then answers 409 `interrupted`."""
        job = self.active.get(request_id)
        if job is None:
            raise NotFound(f"no queued or running job has id {request_id!r}", location="id")
        await self.client.cancel(job.prompt_id)
        self.tracker.settle(job.prompt_id, Interrupted("the job was interrupted on request"))

    async def drain(self, timeout_s: float) -> None:
        """Wait until no job is in flight, at most timeout_s."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.idle.wait(), timeout_s)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
