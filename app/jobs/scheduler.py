"""Scheduler: which ComfyUI instance runs which job, and the gateway's own queue of jobs waiting.

In a pool, an instance takes one job at a time and the rest wait here, in order: a slow job never
sits in ComfyUI's queue in front of a quick one while another GPU is idle. With a single
instance, jobs go to ComfyUI's queue at once, as they always did (the only wait here is while it
restarts or recycles).

Among the free instances a job prefers one whose last job loaded the same model (a model load
costs seconds on a GPU), then one that has loaded nothing, then the one idle longest. Jobs are
placed strictly in their queue's order, so affinity never starves one: by rank (app.core.priority:
higher priority first, a waiting job gaining 1 per QUEUE_AGE_STEP_S), the earlier on a tie.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from app.core.errors import GatewayError, Interrupted
from app.core.priority import rank as rank_of


class Instance(Protocol):
    """What the scheduler needs of a ComfyUI instance (app.comfy.instance.ComfyInstance)."""

    index: int
    jobs: set[str]
    models: frozenset[str]
    idle_since: float

    @property
    def accepting(self) -> bool: ...

    @property
    def comfy_queue(self) -> int: ...


InstanceT = TypeVar("InstanceT", bound=Instance)


@dataclass(eq=False)
class Waiting(Generic[InstanceT]):
    """A job waiting in the gateway's queue for an instance."""

    request_id: str
    models: frozenset[str]
    placed: asyncio.Future[InstanceT]
    only: InstanceT | None = None  # pinned: the warmup of each instance
    avoid: InstanceT | None = None  # the instance a retried job just died on
    priority: int = 0
    order: tuple[float, int] = (0.0, 0)  # (rank, arrival): lower goes first (app.core.priority)
    since: float = field(default_factory=time.monotonic)


class Scheduler(Generic[InstanceT]):
    """Places jobs on instances: at once when one is free, else in order as they free up."""

    def __init__(
        self,
        instances: Iterable[InstanceT],
        *,
        one_at_a_time: bool = False,
        age_step_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.instances = list(instances)
        self.age_step_s = age_step_s
        self.clock = clock
        self._epoch = clock()  # ranks count from here: small numbers, as ComfyUI's own
        self._arrivals = itertools.count()
        # One job at a time on an instance when there are several (or when a fleet pulls jobs
        # only for free instances); else ComfyUI's queue orders them.
        self.one_at_a_time = one_at_a_time or len(self.instances) > 1
        self._freed = asyncio.Event()  # set when an instance may have become free
        self.waiting: list[Waiting[InstanceT]] = []
        self.after_release: list[
            Callable[[InstanceT], None]
        ] = []  # e.g. the pool's recycling check

    def rank(self, priority: int, queued_at: float) -> float:
        """A job's place in the queue (lower first), from its priority and when it was queued
        (this scheduler's clock); fixed while it waits (app.core.priority)."""
        return rank_of(priority, queued_at - self._epoch, self.age_step_s)

    @property
    def pooled(self) -> bool:
        return self.one_at_a_time

    def free(self, instance: InstanceT) -> bool:
        if not instance.accepting:
            return False
        if not self.one_at_a_time:
            return True
        # ComfyUI's own queue also holds what clients of the passthrough sent it.
        return not instance.jobs and instance.comfy_queue == 0

    def try_place(
        self, request_id: str, models: frozenset[str], *, only: InstanceT | None = None
    ) -> InstanceT | None:
        """An instance for the job now, when one is free and no job waits before it."""
        if self.waiting:
            return None
        instance = self._choose(models, only, None)
        if instance is not None:
            instance.jobs.add(request_id)
        return instance

    async def place(
        self,
        request_id: str,
        models: frozenset[str],
        *,
        only: InstanceT | None = None,
        avoid: InstanceT | None = None,
        rank: float | None = None,
        priority: int = 0,
    ) -> InstanceT:
        """Wait in the gateway's queue for an instance, at its rank (default: as queued now
        with this priority); withdraw() or fail_waiting() end it."""
        loop = asyncio.get_running_loop()
        if rank is None:
            rank = self.rank(priority, self.clock())
        entry: Waiting[InstanceT] = Waiting(
            request_id, models, loop.create_future(), only, avoid, priority,
            (rank, next(self._arrivals)), self.clock(),
        )  # fmt: skip
        # One insertion keeps the queue in order: ranks are fixed while jobs wait.
        bisect.insort(self.waiting, entry, key=lambda waiting: waiting.order)
        self.dispatch()
        try:
            return await asyncio.shield(entry.placed)
        except asyncio.CancelledError:
            self._drop(entry)  # the job's wait ended (its timeout): give the place back
            raise

    def release(self, instance: InstanceT, request_id: str) -> None:
        """The job is done with the instance; the next waiting job may take it."""
        instance.jobs.discard(request_id)
        if not instance.jobs:
            instance.idle_since = time.monotonic()
        for hook in self.after_release:
            hook(instance)
        self.dispatch()

    async def wait_free(self, timeout_s: float) -> None:
        """Until an instance may have become free, at most timeout_s."""
        self._freed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._freed.wait(), timeout_s)

    def dispatch(self) -> None:
        """Place waiting jobs, in order, on instances that are free now."""
        self._freed.set()
        for entry in list(self.waiting):
            instance = self._choose(entry.models, entry.only, entry.avoid)
            if instance is None:
                continue  # a pinned or retried job may wait while later ones can go
            self.waiting.remove(entry)
            instance.jobs.add(entry.request_id)
            entry.placed.set_result(instance)

    def withdraw(self, request_id: str) -> bool:
        """Take a waiting job out of the queue (it was interrupted); False if it was not there."""
        for entry in self.waiting:
            if entry.request_id == request_id:
                self.waiting.remove(entry)
                entry.placed.set_exception(Interrupted("the job was interrupted on request"))
                return True
        return False

    def fail_waiting(self, error: GatewayError) -> None:
        """End every waiting job with this error (the gateway is shutting down)."""
        waiting, self.waiting = self.waiting, []
        for entry in waiting:
            entry.placed.set_exception(error)

    def position(self, request_id: str) -> int | None:
        """How many jobs wait before this one in the gateway's queue, or None."""
        for number, entry in enumerate(self.waiting):
            if entry.request_id == request_id:
                return number
        return None

    def _choose(
        self, models: frozenset[str], only: InstanceT | None, avoid: InstanceT | None
    ) -> InstanceT | None:
        candidates = [
            i
            for i in self.instances
            if self.free(i) and (only is None or i is only) and (avoid is None or i is not avoid)
        ]
        if not candidates:
            return None
        # Same model loaded, then nothing loaded, then the one idle longest.
        return min(
            candidates, key=lambda i: (not (i.models & models), bool(i.models), i.idle_since)
        )

    def _drop(self, entry: Waiting[InstanceT]) -> None:
        if entry in self.waiting:
            self.waiting.remove(entry)
        elif entry.placed.done() and not entry.placed.exception():
            self.release(entry.placed.result(), entry.request_id)
