"""The one door for jobs: routes and facades start, run, read and interrupt jobs only here.

The door checks that the gateway takes work (app.gateway.readiness), that the caller may name
what the graph names and has room under its max_jobs (app.gateway.quotas); where jobs live is
the job backend's (app.gateway.backend: this process, or a fleet's Redis), so the door never
asks which mode it is in.

Every method takes the Caller the API-key middleware found (app.core.keys). A job belongs to the
key that made it and its id is that key's: two keys may both run `order-123` (in a fleet too:
the owner is part of the job's key in Redis). A key asking for another key's job, or for one that
does not exist, gets the same 404 (a 403 would tell it the id is taken). An admin key sees and
cancels every key's job: by its own id first, else the one job of any key with that id, else
`owner` names the key (when two keys have used the id: 409 until it does).
"""

from __future__ import annotations

import asyncio
from typing import Any

from app.comfy.graph import Graph
from app.core.errors import Conflict, NotFound
from app.core.keys import Caller, owner_label
from app.core.options import JobOptions
from app.core.outcome import JobOutcome
from app.gateway.backend import AcceptedJob, AtMaxJobs, JobBackend, QueuedJob
from app.gateway.quotas import Quotas
from app.gateway.readiness import Readiness
from app.jobs.input_names import check_names
from app.jobs.records import JobView
from app.jobs.runner import JobRunner
from app.models.grants import Grants


class JobDoor:
    """Starts, reads and interrupts jobs for a caller, through the job backend."""

    def __init__(
        self,
        backend: JobBackend,
        readiness: Readiness,
        quotas: Quotas,
        grants: Grants,
        runner: JobRunner,
    ) -> None:
        self.backend = backend
        self.readiness = readiness
        self.quotas = quotas
        self.grants = grants
        self.runner = runner  # this gateway's own jobs (in a fleet: those it runs), for metrics

    # -- starting jobs ------------------------------------------------------------------------
    async def start_job(
        self,
        request_id: str,
        graph: Graph,
        options: JobOptions | None = None,
        *,
        caller: Caller,
        echo_input: dict[str, Any] | None = None,
        workflow: str = "prompt",
    ) -> AcceptedJob:
        """Accept a job of this caller's, if the gateway (and the key's max_jobs) take work now;
        ComfyUI's refusal raises here when the job is submitted at once."""
        self.readiness.check_accepting()
        # Before anything is taken: what the graph names is the caller's to name.
        check_names(graph, caller)
        self.grants.check_job(caller, graph, options)  # model URLs, S3 buckets
        self.quotas.check_priority(caller, options.priority if options is not None else 0)
        most = self.quotas.max_jobs(caller)
        try:
            return await self.backend.submit(
                request_id,
                graph,
                options,
                owner=caller.id,
                max_jobs=most,
                echo_input=echo_input,
                workflow=workflow,
            )
        except AtMaxJobs as e:
            raise self.quotas.too_many_jobs(caller, e.have, most) from None

    async def run_job(
        self, request_id: str, graph: Graph, workflow: str = "prompt", *, caller: Caller
    ) -> JobOutcome:
        """Accept a job and wait for its outputs; a GatewayError says why there are none."""
        job = await self.start_job(request_id, graph, workflow=workflow, caller=caller)
        assert job.task is not None
        # A request that goes away leaves the job to end (and be recorded) as it would.
        return await asyncio.shield(job.task)

    # -- reading and interrupting -------------------------------------------------------------
    async def job(self, request_id: str, caller: Caller, owner: str | None = None) -> JobView:
        """What is known of a job the caller may see, running or recently finished (in a fleet:
        by any gateway); 404 for any other (unknown, another key's, or finished too long ago)."""
        record = await self._record(request_id, caller, owner)
        if record is None or not caller.sees(record.owner):
            who = self.backend.who_knows
            raise NotFound(
                f"{who} no job {request_id!r} (unknown, or finished too long ago)", location="id"
            )
        return record

    async def _record(self, request_id: str, caller: Caller, owner: str | None) -> JobView | None:
        backend = self.backend
        if not caller.admin:
            return await backend.record(request_id, caller.id)
        if owner is not None:
            return await backend.record(request_id, owner)
        if (own := await backend.record(request_id, caller.id)) is not None:
            return own
        owners = await backend.owners(request_id)
        if len(owners) > 1:
            raise ambiguous(request_id, len(owners))
        return await backend.record(request_id, owners[0]) if owners else None

    async def running_job(
        self, request_id: str, caller: Caller, owner: str | None = None
    ) -> JobView | None:
        """A job of the caller's (an admin: anyone's) that is queued or running now, or None."""
        try:
            record = await self.job(request_id, caller, owner)
        except NotFound:
            return None
        return await self.backend.running(record)

    async def queue_position(self, record: JobView) -> int | None:
        """How many jobs are ahead of a queued one: in the fleet's queue, the gateway's queue
        while it waits there, else its instance's ComfyUI queue; None once it runs."""
        if record.status != "queued":
            return None
        return await self.backend.position(record)

    async def queued(self, caller: Caller, limit: int = 100) -> list[QueuedJob]:
        """The jobs waiting to run, in order, with their positions: those the caller may see
        (an admin: every key's; positions count every job)."""
        return [job for job in await self.backend.queued(limit) if caller.sees(job.owner)]

    async def interrupt(self, request_id: str, caller: Caller, owner: str | None = None) -> None:
        """Cancel a queued or running job the caller may see; its own request then answers 409
        `interrupted`. 404 for any other."""
        record = await self.running_job(request_id, caller, owner)
        if record is None:
            raise NotFound(f"no queued or running job has id {request_id!r}", location="id")
        await self.backend.interrupt(record)

    # -- this gateway's jobs, per key ---------------------------------------------------------
    def running_jobs(self, caller: Caller) -> int:
        """How many jobs the caller may see are queued or running on this gateway."""
        return sum(caller.sees(owner) for owner, _ in self.runner.active)

    def active_by_key(self) -> dict[str, int]:
        """Jobs queued or running on this gateway now per key name (metrics label), for
        /metrics."""
        counts: dict[str, int] = {}
        for owner, _ in self.runner.active:
            if owner is not None:
                counts[owner_label(owner)] = counts.get(owner_label(owner), 0) + 1
        return counts


def ambiguous(request_id: str, count: int) -> Conflict:
    return Conflict(
        f"{count} API keys have a job with id {request_id!r}: name the key whose job you mean "
        "with `owner` (its name)",
        location="owner",
    )
