"""Where a job is: the gateway's own words for a job's status and progress, in one place.

Each facade says them in its own words, with one table beside its translation: /prompt says
the gateway's own (`app.routes.prompt.STATUS`), the Comfy API v2 its own
(`app.compat.v2.jobs.STATUSES`: `interrupted` is `canceled`), AUTOMATIC1111's /sdapi/v1 its
/progress fields (`app.compat.a1111.generations.progress`); /api/v1/prompts answers only once
the job has ended, with the HTTP status of its outcome (`app.compat.v1.routes.node_failed`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

JobStatus = Literal["queued", "running", "succeeded", "failed", "interrupted"]
STATUSES: tuple[JobStatus, ...] = get_args(JobStatus)
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "interrupted"})


def ended_status(error: Mapping[str, Any] | None) -> JobStatus:
    """The status of a job that ended with this error body (None: it succeeded)."""
    if error is None:
        return "succeeded"
    return "interrupted" if error.get("code") == "interrupted" else "failed"


@dataclass(frozen=True)
class JobProgress:
    """How far the node running now is: ComfyUI's `progress` (steps of a sampler, say)."""

    node: str | None = None  # the node running now
    step: float = 0  # steps it has done (ComfyUI's `value`)
    max: float = 0  # steps it will take (0: it reports none)

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> JobProgress:
        """From a job's record or `progress` event: `{"value", "max", "node"}`."""
        node = data.get("node")
        return cls(
            node=str(node) if node is not None else None,
            step=data.get("value", 0),
            max=data.get("max", 0),
        )

    @property
    def fraction(self) -> float:
        """The share of the node's steps done, 0 to 1 (0 when it reports no steps)."""
        return min(max(self.step / self.max, 0.0), 1.0) if self.max else 0.0

    @property
    def percent(self) -> float:
        return round(self.fraction * 100, 1)
