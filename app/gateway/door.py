"""The one door for jobs: routes and facades start, run, read and interrupt jobs only here.

The door checks that the gateway takes work, and hides where jobs live: in this process (the job
runner and its history), or in a fleet's Redis (app.fleet) that any gateway reads and writes.

Every method takes the Caller the API-key middleware found (app.core.keys). A job belongs to the
key that made it and its id is that key's: two keys may both run `order-123` (in a fleet too:
the owner is part of the job's key in Redis). A key asking for another key's job, or for one that
does not exist, gets the same 404 (a 403 would tell it the id is taken). An admin key sees and
cancels every key's job: by its own id first, else the one job of any key with that id, else
`owner` names the key (when two keys have used the id).

The jobs each key may have queued or running at once (KEY_LIMITS max_jobs) are counted here: on
a lone gateway those it holds, in a fleet those the fleet holds (counted in Redis as they are
queued, so every gateway refuses the same 429).
"""

from __future__ import annotations

import asyncio
from typing import Any

from app.comfy.graph import Graph
from app.core.errors import ComfyUnavailable, Conflict, NotFound, QueueFull, TooManyJobs
from app.core.keys import Caller, owner_label
from app.core.limits import limit_for
from app.core.metrics import GatewayMetrics
from app.core.options import JobOptions
from app.core.outcome import JobOutcome
from app.core.records import JobView
from app.core.settings import Settings
from app.fleet.fleet import Fleet
from app.fleet.queue import FleetJob
from app.fleet.store import MaxJobsReached
from app.gateway.pool import Pool
from app.jobs.input_names import check_names
from app.jobs.job import Job
from app.jobs.runner import JobRunner
from app.models.grants import Grants

AcceptedJob = Job | FleetJob
QUOTA_RETRY_S = 5  # when a job ends is unknown; about what a short one takes


class JobDoor:
    """The Gateway's methods for jobs (a mixin: the Gateway provides the services below)."""

    settings: Settings
    grants: Grants
    pool: Pool
    jobs: JobRunner
    fleet: Fleet | None
    metrics: GatewayMetrics
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
        if self.fleet is not None and (down := self.fleet.down_reason()):
            return down
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
        self.check_accepting()
        # Before anything is taken: what the graph names is the caller's to name.
        check_names(graph, caller)
        self.grants.check_job(caller, graph, options)  # model URLs, S3 buckets
        most = self.max_jobs(caller)
        if self.fleet is not None:
            try:  # the key's jobs are counted in Redis, as the job is queued
                return await self.fleet.queue.submit(
                    request_id,
                    graph,
                    options or JobOptions(),
                    owner=caller.id,
                    max_jobs=most,
                    echo_input=echo_input,
                    workflow=workflow,
                )
            except MaxJobsReached as e:
                raise self.too_many_jobs(caller, e.have, most) from None
        if most and (have := self.jobs.jobs_of(caller.id)) >= most:
            raise self.too_many_jobs(caller, have, most)
        # No await between the count and the runner holding the id: the count stays true.
        return await self.jobs.start(
            request_id, graph, options, owner=caller.id, echo_input=echo_input, workflow=workflow
        )

    async def run_job(
        self, request_id: str, graph: Graph, workflow: str = "prompt", *, caller: Caller
    ) -> JobOutcome:
        """Accept a job and wait for its outputs; a GatewayError says why there are none."""
        job = await self.start_job(request_id, graph, workflow=workflow, caller=caller)
        assert job.task is not None
        # A request that goes away leaves the job to end (and be recorded) as it would.
        return await asyncio.shield(job.task)

    # -- KEY_LIMITS max_jobs ------------------------------------------------------------------
    def max_jobs(self, caller: Caller) -> int:
        """The caller's KEY_LIMITS max_jobs (0: no limit)."""
        return limit_for(self.settings.key_limits, caller).max_jobs

    async def check_quota(self, caller: Caller, others: int = 0) -> None:
        """Refuse (429) new work of a key that has its max_jobs queued or running already (in a
        fleet: anywhere in it); `others`: its work the door does not hold (its prompts in
        ComfyUI's queue, from the /comfy passthrough)."""
        most = self.max_jobs(caller)
        if not most:
            return
        if self.fleet is not None:
            have = await self.fleet.queue.jobs_of(caller.id)
        else:
            have = self.jobs.jobs_of(caller.id)
        if have + others >= most:
            raise self.too_many_jobs(caller, have + others, most)

    def too_many_jobs(self, caller: Caller, have: int, most: int) -> TooManyJobs:
        """The 429 of a key at its max_jobs (counted in the key's metrics)."""
        self.metrics.key_limited(caller.label, "max_jobs")
        return TooManyJobs(
            f"this API key has {have} job(s) queued or running, as many as its KEY_LIMITS "
            f"max_jobs ({most}) allows; retry when one has ended",
            details={"limit": "max_jobs", "max_jobs": most},
            headers={"Retry-After": str(QUOTA_RETRY_S)},
        )

    # -- reading and interrupting -------------------------------------------------------------
    async def job(self, request_id: str, caller: Caller, owner: str | None = None) -> JobView:
        """What is known of a job the caller may see, running or recently finished (in a fleet:
        by any gateway); 404 for any other (unknown, another key's, or finished too long ago)."""
        if self.fleet is not None:
            record: JobView | None = await self._fleet_record(request_id, caller, owner)
            where = "the fleet knows"
        else:
            record = self._record(request_id, caller, owner)
            where = "this gateway process knows"
        if record is None or not caller.sees(record.owner):
            raise NotFound(
                f"{where} no job {request_id!r} (unknown, or finished too long ago)",
                location="id",
            )
        return record

    def _record(self, request_id: str, caller: Caller, owner: str | None) -> JobView | None:
        history = self.jobs.history
        if not caller.admin:
            return history.get((caller.id, request_id))
        if owner is not None:
            return history.get((owner, request_id))
        if (own := history.get((caller.id, request_id))) is not None:
            return own
        found = history.with_id(request_id)
        if len(found) > 1:
            raise ambiguous(request_id, len(found))
        return found[0] if found else None

    async def _fleet_record(
        self, request_id: str, caller: Caller, owner: str | None
    ) -> JobView | None:
        assert self.fleet is not None
        queue = self.fleet.queue
        if not caller.admin:
            return await queue.record(request_id, caller.id)
        if owner is not None:
            return await queue.record(request_id, owner)
        if (own := await queue.record(request_id, caller.id)) is not None:
            return own
        owners = await queue.owners(request_id)  # the fleet's index of owners by id
        if len(owners) > 1:
            raise ambiguous(request_id, len(owners))
        return await queue.record(request_id, owners[0]) if owners else None

    async def running_job(
        self, request_id: str, caller: Caller, owner: str | None = None
    ) -> JobView | None:
        """A job of the caller's (an admin: anyone's) that is queued or running now, or None."""
        try:
            record = await self.job(request_id, caller, owner)
        except NotFound:
            return None
        if self.fleet is not None:
            return None if record.finished else record
        job = self.jobs.active.get((record.owner, record.id))
        return job.record if job is not None else None

    def running_jobs(self, caller: Caller) -> int:
        """How many jobs the caller may see are queued or running on this gateway."""
        return sum(caller.sees(owner) for owner, _ in self.jobs.active)

    def active_by_key(self) -> dict[str, int]:
        """Jobs queued or running on this gateway now per key name (metrics label), for
        /metrics."""
        counts: dict[str, int] = {}
        for owner, _ in self.jobs.active:
            if owner is not None:
                counts[owner_label(owner)] = counts.get(owner_label(owner), 0) + 1
        return counts

    async def queue_position(self, record: JobView) -> int | None:
        """How many jobs are ahead of a queued one: in the fleet's queue, the gateway's queue
        while it waits there, else its instance's ComfyUI queue; None once it runs."""
        if record.status != "queued":
            return None
        if self.fleet is not None:
            return await self.fleet.queue.position(record.id, record.owner)
        job = self.jobs.active.get((record.owner, record.id))
        if job is None:
            return None
        waiting = self.pool.scheduler.position(job.slot)
        if waiting is not None:
            return waiting
        if job.instance is None:
            return None
        _, pending = await job.instance.client.queue()
        return pending.index(record.prompt_id) if record.prompt_id in pending else None

    async def interrupt(self, request_id: str, caller: Caller, owner: str | None = None) -> None:
        """Cancel a queued or running job the caller may see; its own request then answers 409
        `interrupted`. 404 for any other."""
        record = await self.running_job(request_id, caller, owner)
        if record is None:
            raise NotFound(f"no queued or running job has id {request_id!r}", location="id")
        if self.fleet is not None:
            await self.fleet.queue.interrupt(record.id, record.owner)
        else:
            await self.jobs.interrupt((record.owner, record.id))


def ambiguous(request_id: str, count: int) -> Conflict:
    return Conflict(
        f"{count} API keys have a job with id {request_id!r}: name the key whose job you mean "
        "with `owner` (its name)",
        location="owner",
    )
