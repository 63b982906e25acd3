"""The one door for jobs: routes and facades use these methods of the Gateway, never the
services behind them.

Every method takes the Caller the API-key middleware found (app.core.keys). A job belongs to the
key that made it and its id is that key's: two keys may both run `order-123`. A key asking for
another key's job, or for one that does not exist, gets the same 404 (a 403 would tell it the id
is taken). An admin key sees and cancels every key's job: by its own id first, else the one job
of any key with that id, else `owner` names the key (when two keys have used the id).

The jobs each key may have queued or running at once (KEY_LIMITS max_jobs) are counted here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.comfy.graph import Graph
from app.core.errors import Conflict, NotFound, TooManyJobs
from app.core.keys import Caller, owner_label
from app.core.limits import limit_for
from app.core.options import JobOptions
from app.core.records import JobRecord
from app.core.schemas import PromptResponse
from app.jobs.job import Job

if TYPE_CHECKING:
    from app.core.metrics import GatewayMetrics
    from app.core.settings import Settings
    from app.gateway.pool import Pool
    from app.jobs.runner import JobRunner

QUOTA_RETRY_S = 5  # when a job ends is unknown; about what a short one takes


class JobDoor:
    """The Gateway's methods for jobs (a mixin: the Gateway has the services they use)."""

    settings: Settings
    jobs: JobRunner
    pool: Pool
    metrics: GatewayMetrics

    def check_accepting(self) -> None:
        raise NotImplementedError  # the Gateway's: started, not stopping, queue not full

    async def start_job(
        self,
        request_id: str,
        graph: Graph,
        options: JobOptions | None = None,
        *,
        caller: Caller,
        echo_input: dict[str, Any] | None = None,
        workflow: str = "prompt",
    ) -> Job:
        """Accept a job of this caller's, if the gateway (and the key's max_jobs) take work now;
        ComfyUI's refusal raises here."""
        self.check_accepting()
        self.check_quota(caller)
        # No await between the count and the runner holding the id: the count stays true.
        return await self.jobs.start(
            request_id, graph, options, owner=caller.id, echo_input=echo_input, workflow=workflow
        )

    async def run_job(
        self, request_id: str, graph: Graph, workflow: str = "prompt", *, caller: Caller
    ) -> PromptResponse:
        """Accept a job and wait for its outputs; a GatewayError says why there are none."""
        self.check_accepting()
        self.check_quota(caller)
        return await self.jobs.run(request_id, graph, workflow, owner=caller.id)

    def check_quota(self, caller: Caller, others: int = 0) -> None:
        """Refuse (429) a new job of a key that has its max_jobs queued or running already;
        `others`: its work the gateway does not run (its prompts in ComfyUI's queue)."""
        most = limit_for(self.settings.key_limits, caller).max_jobs
        if not most:
            return
        have = self.jobs.jobs_of(caller.id) + others
        if have >= most:
            self.metrics.key_limited(caller.label, "max_jobs")
            raise TooManyJobs(
                f"this API key has {have} job(s) queued or running, as many as its KEY_LIMITS "
                f"max_jobs ({most}) allows; retry when one has ended",
                details={"limit": "max_jobs", "max_jobs": most},
                headers={"Retry-After": str(QUOTA_RETRY_S)},
            )

    def job(self, request_id: str, caller: Caller, owner: str | None = None) -> JobRecord:
        """What this gateway process knows of a job the caller may see, running or recently
        finished; 404 for any other (unknown, another key's, or finished too long ago)."""
        record = self._record(request_id, caller, owner)
        if record is None or not caller.sees(record.owner):
            raise NotFound(
                f"this gateway process knows no job {request_id!r} (unknown, or finished too "
                "long ago)",
                location="id",
            )
        return record

    def _record(self, request_id: str, caller: Caller, owner: str | None) -> JobRecord | None:
        history = self.jobs.history
        if not caller.admin:
            return history.get((caller.id, request_id))
        if owner is not None:
            return history.get((owner, request_id))
        if (own := history.get((caller.id, request_id))) is not None:
            return own
        found = history.with_id(request_id)
        if len(found) > 1:
            raise Conflict(
                f"{len(found)} API keys have a job with id {request_id!r}: name the key whose "
                "job you mean with `owner` (its name)",
                location="owner",
            )
        return found[0] if found else None

    def running_job(
        self, request_id: str, caller: Caller, owner: str | None = None
    ) -> JobRecord | None:
        """A job of the caller's (an admin: anyone's) that is queued or running now, or None."""
        try:
            record = self.job(request_id, caller, owner)
        except NotFound:
            return None
        job = self.jobs.active.get(record.key)
        return job.record if job is not None else None

    def running_jobs(self, caller: Caller) -> int:
        """How many jobs the caller may see are queued or running."""
        return sum(caller.sees(owner) for owner, _ in self.jobs.active)

    def active_by_key(self) -> dict[str, int]:
        """Jobs queued or running now per key name (metrics label), for /metrics."""
        counts: dict[str, int] = {}
        for owner, _ in self.jobs.active:
            if owner is not None:
                counts[owner_label(owner)] = counts.get(owner_label(owner), 0) + 1
        return counts

    async def queue_position(self, record: JobRecord) -> int | None:
        """How many jobs are ahead of a queued one: in the gateway's queue while it waits
        there, else in its instance's ComfyUI queue; None once it runs."""
        if record.status != "queued":
            return None
        job = self.jobs.active.get(record.key)
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
        record = self.running_job(request_id, caller, owner)
        if record is None:
            raise NotFound(f"no queued or running job has id {request_id!r}", location="id")
        await self.jobs.interrupt(record.key)
