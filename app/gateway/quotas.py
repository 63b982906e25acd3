"""Quotas: the jobs each key may have queued or running at once (KEY_LIMITS max_jobs), and the
highest priority it may give them (max_priority).

Counted where the job mode keeps its jobs (app.gateway.backend): on a lone gateway those it
holds, in a fleet those the fleet holds (counted in Redis as they are queued, so every gateway
refuses the same 429).
"""

from __future__ import annotations

from app.core.errors import Forbidden, TooManyJobs
from app.core.keys import Caller
from app.core.limits import KeyLimit, limit_for
from app.core.metrics import GatewayMetrics
from app.gateway.backend import JobBackend

QUOTA_RETRY_S = 5  # when a job ends is unknown; about what a short one takes


class Quotas:
    """Each key's max_jobs, checked against the backend's count; refusals counted in metrics."""

    def __init__(
        self, limits: dict[str, KeyLimit], backend: JobBackend, metrics: GatewayMetrics
    ) -> None:
        self.limits = limits
        self.backend = backend
        self.metrics = metrics

    def max_jobs(self, caller: Caller) -> int:
        """The caller's KEY_LIMITS max_jobs (0: no limit)."""
        return limit_for(self.limits, caller).max_jobs

    def check_priority(self, caller: Caller, priority: int) -> None:
        """Refuse (403) a priority above the key's KEY_LIMITS max_priority: the job would run
        later than its client believes if it were lowered quietly."""
        most = limit_for(self.limits, caller).max_priority
        if most is not None and priority > most:
            self.metrics.key_limited(caller.label, "max_priority")
            raise Forbidden(
                f"priority: this API key may ask for priority {most} at most (its KEY_LIMITS "
                f"max_priority), not {priority}",
                location="priority",
                details={"limit": "max_priority", "max_priority": most},
            )

    async def check(self, caller: Caller, others: int = 0) -> None:
        """Refuse (429) new work of a key that has its max_jobs queued or running already (in a
        fleet: anywhere in it); `others`: its work the door does not hold (its prompts in
        ComfyUI's queue, from the /comfy passthrough)."""
        most = self.max_jobs(caller)
        if not most:
            return
        have = await self.backend.jobs_of(caller.id)
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
