"""JobBackend: where accepted jobs live, one implementation per job mode, chosen once.

A lone gateway keeps its jobs in this process (app.gateway.local_backend: the job runner, the
pool, the runner's history); a gateway of a fleet (QUEUE_URL) keeps them in Redis, where every
gateway of the fleet reads and writes them (app.gateway.fleet_backend). The Gateway picks one
at start-up; the door (app.gateway.door), readiness and quotas call only this protocol, so none
of them asks which mode it is in. A new job mode is one more implementation.

Which caller may see which job is the door's to decide: every lookup here names the owner (the
id of the API key that made the job; None without keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from app.comfy.graph import Graph
from app.core.limits import SharedRates
from app.core.options import JobOptions
from app.fleet.queue import FleetJob
from app.fleet.shelf import FileShelf
from app.jobs.job import Job
from app.jobs.records import JobView

AcceptedJob = Job | FleetJob  # what a start hands back: `id`, `record`, and `task`, its outcome


@dataclass(frozen=True)
class Peer:
    """A gateway of the fleet, as its shared queue knows it."""

    name: str  # its consumer name: host, process id and a random tail
    holding: int  # jobs it has taken and not yet acknowledged (running, or their webhooks)
    idle_s: float  # since it last read the queue or heartbeat its jobs
    this: bool  # this gateway


@dataclass(frozen=True)
class QueuedJob:
    """A job waiting to run, as the queue shows it (the operator's console): `position` jobs
    run before it."""

    id: str
    owner: str | None
    priority: int
    position: int
    waited_s: float


class AtMaxJobs(Exception):
    """The owner has its KEY_LIMITS max_jobs queued or running already (`have` of them)."""

    def __init__(self, have: int) -> None:
        super().__init__(have)
        self.have = have


class JobBackend(Protocol):
    """Where accepted jobs are queued, run, recorded and interrupted."""

    # Who answers a lookup, as the 404 says it: "{who_knows} no job 'x'" ("the fleet knows").
    who_knows: str
    # Rate-limit buckets every gateway shares (a fleet's), or None: each gateway counts alone.
    shared_rates: SharedRates | None
    # The output files other gateways may fetch from this one (a fleet's), or None.
    shelf: FileShelf | None
    # Whether a full queue makes this gateway not ready: a lone gateway's queue is its own; a
    # fleet's is every gateway's, so sending traffic elsewhere would not help.
    full_queue_means_not_ready: bool

    @property
    def depth(self) -> int:
        """Jobs waiting or running (the fleet's, in a fleet)."""
        ...

    def down_reason(self) -> str | None:
        """Why no job can be accepted now that the mode adds (Redis out of reach), or None."""
        ...

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
        """Accept a job; AtMaxJobs when its owner has max_jobs (0: no limit) already, counted
        where the mode counts them (this process, or Redis as the job is queued)."""
        ...

    async def record(self, request_id: str, owner: str | None) -> JobView | None:
        """The owner's job with this id, or None when none is known (or no longer)."""
        ...

    async def owners(self, request_id: str) -> list[str | None]:
        """Every owner that has a known job with this id (what an admin may mean by it)."""
        ...

    async def jobs_of(self, owner: str | None) -> int:
        """The owner's jobs queued or running."""
        ...

    async def running(self, record: JobView) -> JobView | None:
        """The job's record while it is queued or running, else None."""
        ...

    async def position(self, record: JobView) -> int | None:
        """How many jobs are ahead of this queued one, or None once it runs."""
        ...

    async def queued(self, limit: int) -> list[QueuedJob]:
        """The jobs waiting to run, in the order they will (at most `limit`), every owner's."""
        ...

    async def interrupt(self, record: JobView) -> None:
        """Cancel this queued or running job; its own request then answers 409."""
        ...

    async def finished(self, limit: int) -> list[JobView]:
        """Every owner's last finished jobs (at most limit), newest first (the operator page);
        a fleet's without their results (read one with `record`)."""
        ...

    async def peers(self) -> list[Peer]:
        """The other gateways taking this mode's jobs, as far as it knows them (none alone)."""
        ...

    async def start(self) -> None:
        """Begin taking jobs from the mode's queue (after the instances are up)."""
        ...

    def stop_taking(self) -> None:
        """Take no more jobs from the mode's queue (shutdown began)."""
        ...

    def abandon(self) -> None:
        """The grace period is over: let go of the jobs still running here, where the mode
        can hand them to another gateway (else they fail with the pool)."""
        ...

    async def close(self, timeout_s: float) -> None:
        """Deliver what the mode still owes (at most timeout_s) and close its connections."""
        ...
