"""The one door for jobs: routes and facades start, run, read and interrupt jobs only here.

The door checks that the gateway takes work, and hides where jobs live: in this process (the job
runner and its history), or in a fleet's Redis (app.fleet) that any gateway reads and writes.
"""

from __future__ import annotations

from typing import Any

from app.comfy.graph import Graph
from app.core.errors import ComfyUnavailable, NotFound, QueueFull
from app.core.options import JobOptions
from app.core.records import JobView
from app.core.schemas import PromptResponse
from app.core.settings import Settings
from app.fleet.fleet import Fleet
from app.fleet.queue import FleetJob
from app.gateway.pool import Pool
from app.jobs.job import Job
from app.jobs.runner import JobRunner

AcceptedJob = Job | FleetJob


class JobDoor:
    """The Gateway's job methods (a mixin: the Gateway provides the services below)."""

    settings: Settings
    pool: Pool
    jobs: JobRunner
    fleet: Fleet | None
    started: bool
    stopping: bool

    @property
    def queue_depth(self) -> int:
        """Jobs waiting or running: this gateway's (or the fleet's, in a fleet)."""
        if self.fleet is not None:
            return max(self.fleet.depth, len(self.jobs.active))
        # ComfyUI's count lags a submission by one status event; our own count does not.
        return max(self.pool.comfy_queue, len(self.jobs.active))

    def unavailable_reason(self) -> str | None:
        """Why no job can run now, or None."""
        if not self.started:
            return "starting"
        if self.stopping:
            return "shutting down"
        if self.fleet is not None and not self.fleet.reachable:
            return "the job queue (Redis, QUEUE_URL) is not reachable"
        if not self.pool.serving:
            return self.pool.down_reason()
        return None

    def queue_full_reason(self) -> str | None:
        cap = self.settings.max_queue_depth
        if cap and self.queue_depth >= cap:
            return f"queue is full ({self.queue_depth} of MAX_QUEUE_DEPTH {cap})"
        return None

    def not_ready_reason(self) -> str | None:
        """Why this gateway should get no traffic now, or None when it should. In a fleet a
        full queue is the fleet's, not this pod's: new jobs get 429 on every gateway, and
        sending traffic elsewhere would not help."""
        if self.fleet is not None:
            return self.unavailable_reason()
        return self.unavailable_reason() or self.queue_full_reason()

    def check_accepting(self) -> None:
        """Raise the error a new job should get now, if any."""
        if reason := self.unavailable_reason():
            raise ComfyUnavailable(f"the gateway cannot take jobs now: {reason}")
        if reason := self.queue_full_reason():
            raise QueueFull(f"the {reason}; retry later", headers={"Retry-After": "5"})

    async def start_job(
        self,
        request_id: str,
        graph: Graph,
        options: JobOptions | None = None,
        *,
        echo_input: dict[str, Any] | None = None,
        workflow: str = "prompt",
    ) -> AcceptedJob:
        """Accept a job, if the gateway takes work now; ComfyUI's refusal raises here when the
        job is submitted at once."""
        self.check_accepting()
        if self.fleet is not None:
            return await self.fleet.queue.submit(
                request_id, graph, options or JobOptions(), echo_input=echo_input, workflow=workflow
            )
        return await self.jobs.start(
            request_id, graph, options, echo_input=echo_input, workflow=workflow
        )

    async def run_job(
        self, request_id: str, graph: Graph, workflow: str = "prompt"
    ) -> PromptResponse:
        """Accept a job and wait for its outputs; a GatewayError says why there are none."""
        job = await self.start_job(request_id, graph, workflow=workflow)
        assert job.task is not None
        return await job.task

    async def job(self, request_id: str) -> JobView:
        """What is known of a job, running or recently finished (in a fleet: by any gateway)."""
        if self.fleet is not None:
            return await self.fleet.queue.record(request_id)
        record = self.jobs.history.get(request_id)
        if record is None:
            raise NotFound(
                f"this gateway process knows no job {request_id!r} (unknown, or finished too "
                "long ago)",
                location="id",
            )
        return record

    async def running_job(self, request_id: str) -> JobView | None:
        """A job that is queued or running now, or None."""
        if self.fleet is not None:
            try:
                record = await self.fleet.queue.record(request_id)
            except NotFound:
                return None
            return None if record.finished else record
        job = self.jobs.active.get(request_id)
        return job.record if job is not None else None

    @property
    def running_jobs(self) -> int:
        """Jobs queued or running on this gateway."""
        return len(self.jobs.active)

    async def queue_position(self, record: JobView) -> int | None:
        """How many jobs are ahead of a queued one: in the fleet's queue, the gateway's queue
        while it waits there, else its instance's ComfyUI queue; None once it runs."""
        if record.status != "queued":
            return None
        if self.fleet is not None:
            return await self.fleet.queue.position(record.id)
        waiting = self.pool.scheduler.position(record.id)
        if waiting is not None:
            return waiting
        job = self.jobs.active.get(record.id)
        if job is None or job.instance is None:
            return None
        _, pending = await job.instance.client.queue()
        return pending.index(record.prompt_id) if record.prompt_id in pending else None

    async def interrupt(self, request_id: str) -> None:
        """Cancel a queued or running job; its own request then answers 409 `interrupted`."""
        if self.fleet is not None:
            await self.fleet.queue.interrupt(request_id)
        else:
            await self.jobs.interrupt(request_id)
