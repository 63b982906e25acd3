"""Finishing a job's attempt: wait for ComfyUI, read and remove the outputs, and make the job's
outcome (app.core.outcome.JobOutcome), the one every answer is rendered from.

Outputs are taken from the output folder the instances share (or through the instance's /view)
into memory (small ones) or the spool (app.jobs.spool), converted or uploaded as the request
asked, and removed from ComfyUI's folder, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from app.comfy.events import PromptWaiter
from app.core.convert_options import ignored_options
from app.core.errors import GatewayError, PromptTimeout
from app.core.options import JobOptions
from app.core.outcome import JobOutcome, ResultFile
from app.core.schemas import Stats
from app.jobs.job import Job
from app.jobs.outputs import OutputFile, OutputStore, output_files
from app.jobs.spool import Spool
from app.jobs.uploads import Uploader

log = logging.getLogger(__name__)


class Finisher:
    """Waits for a placed job's prompt and turns its outputs into its outcome."""

    def __init__(
        self,
        output_dir: Path,
        uploader: Uploader,
        spool: Spool,
        *,
        keep_outputs: bool,
        timeout_s: float | None,
    ) -> None:
        self.output_dir = output_dir
        self.uploader = uploader
        self.spool = spool
        self.keep_outputs = keep_outputs
        self.timeout_s = timeout_s

    async def finish(self, job: Job, deadline: float | None) -> JobOutcome:
        """Wait for ComfyUI, read and remove the outputs, and make the outcome."""
        waiter, instance = job.waiter, job.instance
        assert waiter is not None and instance is not None
        outputs = OutputStore(self.output_dir, instance.client, self.spool, keep=self.keep_outputs)
        files: list[OutputFile] = []
        try:
            result = await self._wait(waiter, instance.client, deadline)
            executed = time.monotonic()
            files = output_files(result)
            results = await self._collect(outputs, files, job.options)
        finally:
            if not self.keep_outputs:
                outputs.remove(files or output_files(waiter.outputs))
        done = time.monotonic()
        exec_start = waiter.started_at or executed
        stats = Stats(
            queue=_ms(exec_start - job.started),
            execution=_ms(executed - exec_start),
            postprocess=_ms(done - executed),
            total=_ms(done - job.started),
        )
        log.info("job %s: %d outputs in %.0f ms", job.id, len(files), stats.total)
        return JobOutcome(
            id=job.id,
            prompt=job.prompt,
            files=tuple(results),
            stats=stats,
            input=job.echo_input,
            warnings=tuple(ignored_options(job.options.convert_output)),
        )

    async def _collect(
        self, outputs: OutputStore, files: list[OutputFile], options: JobOptions
    ) -> list[ResultFile]:
        """Each file in memory or in the spool, or where the upload put it."""
        target = options.upload
        if target is None:
            return list(
                await asyncio.gather(*(outputs.take(f, options.convert_output) for f in files))
            )
        stored = []
        for file in files:  # one at a time: never more than one output on its way
            taken = await outputs.take(file, options.convert_output)
            location = await self.uploader.store(target, taken)
            stored.append(ResultFile(taken.name, taken.size, taken.node, location=location))
        return stored

    async def _wait(self, waiter: PromptWaiter, client: Any, deadline: float | None) -> Any:
        timeout_s = None if deadline is None else max(deadline - time.monotonic(), 0)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter.done), timeout_s)
        except TimeoutError:
            with contextlib.suppress(GatewayError):
                await client.cancel(waiter.prompt_id)
            raise PromptTimeout.after(self.timeout_s) from None


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
