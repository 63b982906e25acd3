"""What the v2 facade remembers: its jobs (what a gateway job record lacks), the single-use
Idempotency-Keys, and the uploaded assets. All of it lives in this process, bounded.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from app.comfy.graph import Graph
from app.compat.v2.assets import AssetStore
from app.compat.v2.envelope import now
from app.core.bounded import BoundedMap
from app.jobs.records import JobView

MAX_JOBS = 10_000  # as many v2 jobs as the proxy keeps Idempotency-Keys
MAX_KEYS = 10_000
MAX_KEY_LENGTH = 255


@dataclass
class V2Job:
    """A job submitted through /api/v2: the gateway job with the same id has the rest."""

    id: str
    workflow: Graph  # as submitted to the gateway: asset references resolved
    created_at: datetime
    metadata: str | None = None
    priority: int | None = None
    owner: str | None = None  # the id of the API key that submitted it
    started_at: datetime | None = None
    completed_at: datetime | None = None


class V2State:
    """The v2 facade's memory, held on app.state.v2."""

    def __init__(self) -> None:
        self.jobs: BoundedMap[str, V2Job] = BoundedMap(MAX_JOBS)
        self.keys: BoundedMap[str, None] = BoundedMap(MAX_KEYS)  # the Idempotency-Keys claimed
        self.assets = AssetStore()
        self._watchers: set[asyncio.Task[None]] = set()

    def add(self, job: V2Job, record: JobView) -> None:
        self.jobs.put(job.id, job)
        # The gateway's record keeps no clock times; note when it starts and ends.
        task = asyncio.create_task(_times(job, record), name=f"v2-times-{job.id}")
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    def claim(self, key: str, owner: str | None) -> bool:
        """Claim a single-use Idempotency-Key of an API key's (each has its own: one key's
        reuse must not tell it what another sent); False when it was claimed before."""
        scoped = key if owner is None else f"{owner}/{key}"
        if scoped in self.keys:
            return False
        self.keys.put(scoped, None)
        return True

    def release(self, key: str | None, owner: str | None) -> None:
        """Free a key whose request created no job, so that a retry may use it."""
        if key is not None:
            self.keys.pop(key if owner is None else f"{owner}/{key}")


async def v2_state(connection: HTTPConnection) -> V2State:
    state: V2State = connection.app.state.v2
    return state


V2StateDep = Annotated[V2State, Depends(v2_state)]


async def _times(job: V2Job, record: JobView) -> None:
    async for event in record.follow():
        if event is None:
            continue
        if event.type == "running" and job.started_at is None:
            job.started_at = now()
        elif event.type in ("complete", "failed"):
            job.completed_at = now()
