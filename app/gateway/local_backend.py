"""LocalBackend: a lone gateway's jobs, in this process: the job runner, the pool's queue and
ComfyUI's, and the runner's history."""

from __future__ import annotations

import time
from typing import Any

from app.comfy.graph import Graph
from app.core.errors import ComfyUnavailable
from app.core.limits import SharedRates
from app.core.options import JobOptions
from app.fleet.shelf import FileShelf
from app.gateway.backend import AcceptedJob, AtMaxJobs, Peer, QueuedJob
from app.gateway.pool import Pool
from app.jobs.job import Job
from app.jobs.records import JobView
from app.jobs.runner import JobRunner


class LocalBackend:
    """Jobs queued and run by this gateway alone; what it forgets is gone."""

    who_knows = "this gateway process knows"
    shared_rates: SharedRates | None = None
    shelf: FileShelf | None = None
    full_queue_means_not_ready = True

    def __init__(self, runner: JobRunner, pool: Pool) -> None:
        self.runner = runner
        self.pool = pool

    @property
    def depth(self) -> int:
        # ComfyUI's count lags a submission by one status event; our own count does not.
        return max(self.pool.comfy_queue, len(self.runner.active))

    def down_reason(self) -> str | None:
        return None

    async def submit(
        self,
        request_id: str,
        graph: Graph,
        options: JobOptions | None,
        *,
        owner: str | None,
        max_jobs: int,
        echo_input: dict[str, Any] | None,
        workflow: str,
    ) -> AcceptedJob:
        if max_jobs and (have := self.runner.jobs_of(owner)) >= max_jobs:
            raise AtMaxJobs(have)
        # No await between the count and the runner holding the id: the count stays true.
        return await self.runner.start(
            request_id, graph, options, owner=owner, echo_input=echo_input, workflow=workflow
        )

    async def record(self, request_id: str, owner: str | None) -> JobView | None:
        return self.runner.history.get((owner, request_id))

    async def owners(self, request_id: str) -> list[str | None]:
        return [record.owner for record in self.runner.history.with_id(request_id)]

    async def jobs_of(self, owner: str | None) -> int:
        return self.runner.jobs_of(owner)

    async def running(self, record: JobView) -> JobView | None:
        job = self.runner.active.get((record.owner, record.id))
        return job.record if job is not None else None

    async def position(self, record: JobView) -> int | None:
        """The gateway's queue while the job waits there, else its instance's ComfyUI queue."""
        job = self.runner.active.get((record.owner, record.id))
        if job is None:
            return None
        waiting = self.pool.scheduler.position(job.slot)
        if waiting is not None:
            return waiting
        if job.instance is None:
            return None
        _, pending = await job.instance.client.queue()
        return pending.index(record.prompt_id) if record.prompt_id in pending else None

    async def queued(self, limit: int) -> list[QueuedJob]:
        """Those in ComfyUI's queue (a lone instance takes jobs at once), then those in the
        gateway's (a pool's, or while the instance restarts); prompts of the /comfy passthrough
        count for the positions but are not listed."""
        now, active = time.monotonic(), self.runner.active
        found: list[QueuedJob] = []

        def add(job: Job, position: int) -> None:
            if len(found) < limit:
                waited_s = round(now - job.started, 3)
                found.append(QueuedJob(job.id, job.record.owner, job.options.priority,
                                       position, waited_s))  # fmt: skip

        for instance in self.pool.scheduler.instances:
            if not instance.jobs:
                continue  # none of ours there
            try:
                _, pending = await instance.client.queue()
            except ComfyUnavailable:
                continue  # it restarts: its jobs wait again in the gateway's queue
            for position, prompt_id in enumerate(pending):
                if (key := self.runner.by_prompt.get(prompt_id)) in active:
                    add(active[key], position)
        by_slot = {job.slot: job for job in active.values()}
        for position, entry in enumerate(self.pool.scheduler.waiting):
            if (job := by_slot.get(entry.request_id)) is not None:
                add(job, position)
        return found

    async def interrupt(self, record: JobView) -> None:
        await self.runner.interrupt((record.owner, record.id))

    async def finished(self, limit: int) -> list[JobView]:
        found: list[JobView] = [*self.runner.history.finished(limit)]
        return found

    async def peers(self) -> list[Peer]:
        return []  # a lone gateway

    async def start(self) -> None:
        pass  # the runner takes jobs as they are submitted

    def stop_taking(self) -> None:
        pass  # the door refuses new jobs once the gateway is stopping

    def abandon(self) -> None:
        pass  # nobody else would run them: they fail with the pool

    async def close(self, timeout_s: float) -> None:
        pass  # the runner's jobs deliver their own outcomes
