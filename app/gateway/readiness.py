"""Readiness: whether this gateway takes jobs now, and whether it should get traffic (/ready).

Not while it starts or stops, nor while the job mode cannot accept (a fleet's Redis out of
reach) or no ComfyUI instance serves; a new job is refused too when the queue is full
(MAX_QUEUE_DEPTH). A full queue makes a lone gateway not ready, but not a fleet's gateway: the
fleet's queue is every gateway's, so sending traffic elsewhere would not help.
"""

from __future__ import annotations

from app.core.errors import ComfyUnavailable, QueueFull
from app.gateway.backend import JobBackend
from app.gateway.lifecycle import Lifecycle
from app.gateway.pool import Pool


class Readiness:
    """Reasons, read from the lifecycle, the job backend and the pool, at the moment asked."""

    def __init__(
        self, lifecycle: Lifecycle, backend: JobBackend, pool: Pool, max_queue_depth: int
    ) -> None:
        self.lifecycle = lifecycle
        self.backend = backend
        self.pool = pool
        self.max_queue_depth = max_queue_depth

    @property
    def queue_depth(self) -> int:
        """Jobs waiting or running: this gateway's (or the fleet's, in a fleet)."""
        return self.backend.depth

    def unavailable_reason(self) -> str | None:
        """Why no job can run now, or None."""
        if not self.lifecycle.started:
            return "starting"
        if self.lifecycle.stopping:
            return "shutting down"
        if down := self.backend.down_reason():
            return down
        if not self.pool.serving:
            return self.pool.down_reason()
        return None

    def queue_full_reason(self) -> str | None:
        cap = self.max_queue_depth
        if cap and self.queue_depth >= cap:
            return f"queue is full ({self.queue_depth} of MAX_QUEUE_DEPTH {cap})"
        return None

    def not_ready_reason(self) -> str | None:
        """Why this gateway should get no traffic now, or None when it should."""
        if reason := self.unavailable_reason():
            return reason
        return self.queue_full_reason() if self.backend.full_queue_means_not_ready else None

    def check_accepting(self) -> None:
        """Raise the error a new job should get now, if any."""
        if reason := self.unavailable_reason():
            raise ComfyUnavailable(f"the gateway cannot take jobs now: {reason}")
        if reason := self.queue_full_reason():
            raise QueueFull(f"the {reason}; retry later", headers={"Retry-After": "5"})
