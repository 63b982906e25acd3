"""Pool: the gateway's ComfyUI instances, started together, watched and recycled one by one.

A crash stays local: the instance's jobs fail over to the others (the runner retries them), it
restarts with back-off (ALWAYS_RESTART_COMFYUI) while the others keep serving. Recycling
(RECYCLE_AFTER_JOBS, RECYCLE_ABOVE_RSS_MB) drains an instance first: it takes no new job,
finishes the ones it has, restarts, and takes jobs again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from app.comfy.instance import ComfyInstance, InstanceState
from app.comfy.process import ComfyStartError
from app.core.errors import ComfyUnavailable, GatewayError
from app.core.readings import InstanceReading
from app.core.settings import Settings
from app.jobs.scheduler import Scheduler

log = logging.getLogger(__name__)


class Pool:
    """Every ComfyUI instance of this gateway, and what keeps them running."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.instances = [ComfyInstance(settings, i) for i in range(settings.instance_count)]
        # In a fleet, jobs are pulled only for a free instance: one at a time on each.
        self.scheduler = Scheduler(
            self.instances,
            one_at_a_time=settings.queue_url is not None,
            age_step_s=settings.queue_age_step_s,
        )
        self.scheduler.after_release.append(self.after_job)
        self._recycles: set[asyncio.Task[None]] = set()
        for instance in self.instances:
            # ComfyUI's queue changed (or the stream reconnected): a job may fit now.
            instance.tracker.listeners.append(self._on_event)
        # Told when an instance died and ALWAYS_RESTART_COMFYUI is off; the Gateway decides.
        self.on_down: Callable[[ComfyInstance, int], Awaitable[None]] | None = None

    @property
    def first(self) -> ComfyInstance:
        return self.instances[0]

    def _on_event(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "status":
            self.scheduler.dispatch()

    async def start(self) -> None:
        """Start every instance at once; ComfyStartError (naming which) when one cannot start."""
        results = await asyncio.gather(
            *(instance.start() for instance in self.instances), return_exceptions=True
        )
        failed = [(i, r) for i, r in zip(self.instances, results, strict=True) if r is not None]
        if failed:
            instance, error = failed[0]
            if not isinstance(error, ComfyStartError):
                raise error
            if len(self.instances) == 1:
                raise error
            raise ComfyStartError(f"{instance.name} did not start: {error}") from error
        for instance in self.instances:
            instance.supervise(self._exited, self._back)

    async def _exited(self, instance: ComfyInstance, code: int) -> None:
        instance.tracker.fail_all(
            ComfyUnavailable(
                f"{instance.name} exited (code {code}) while the job was running",
                instance_lost=True,
            )
        )
        if not self.settings.always_restart_comfyui and self.on_down is not None:
            await self.on_down(instance, code)

    async def _back(self, instance: ComfyInstance) -> None:
        log.info("%s is back (restart %d)", instance.name, instance.process.restarts)
        self.scheduler.dispatch()

    def after_job(self, instance: ComfyInstance) -> None:
        """An instance finished a job: recycle it when it is due and has no job left."""
        s = self.settings
        if not instance.draining:
            rss = instance.rss_mb() if s.recycle_above_rss_mb else None
            if s.recycle_after_jobs and instance.jobs_since_start >= s.recycle_after_jobs:
                reason = f"it ran {instance.jobs_since_start} jobs (RECYCLE_AFTER_JOBS)"
            elif rss is not None and rss > s.recycle_above_rss_mb:
                reason = f"it uses {rss:.0f} MB (RECYCLE_ABOVE_RSS_MB)"
            else:
                return
            log.info("%s will be recycled: %s", instance.name, reason)
            instance.draining = True
        if not instance.jobs and instance.state is InstanceState.READY:
            task = asyncio.create_task(instance.recycle(), name=f"recycle-{instance.index}")
            self._recycles.add(task)
            task.add_done_callback(self._recycles.discard)

    @property
    def serving(self) -> bool:
        """Some instance takes jobs now, or soon (a recycle): jobs may be accepted."""
        return any(
            i.accepting or i.state is InstanceState.RECYCLING or (i.draining and i.jobs)
            for i in self.instances
        )

    @property
    def alive(self) -> bool:
        return any(i.state is not InstanceState.DOWN for i in self.instances)

    def down_reason(self) -> str:
        """Why no instance takes jobs, in the words of the one-instance gateway."""
        if len(self.instances) > 1:
            return "no ComfyUI instance is running (all are starting or restarting)"
        if not self.first.process.running:
            return "ComfyUI is not running (restarting)"
        return "not connected to ComfyUI's event stream"

    @property
    def comfy_queue(self) -> int:
        return sum(i.comfy_queue for i in self.instances)

    def readings(self) -> list[InstanceReading]:
        """What /metrics reads of each instance when it is scraped."""
        readings = []
        for i in self.instances:
            proc, running = i.process.proc, i.process.running
            rss_mb = i.rss_mb()
            readings.append(
                InstanceReading(
                    index=i.index,
                    up=running and i.tracker.connected.is_set(),
                    restarts=i.process.restarts,
                    pid=proc.pid if proc and running else None,
                    version=i.client.version,
                    jobs_run=i.jobs_run,
                    rss_bytes=None if rss_mb is None else rss_mb * 2**20,
                )
            )
        return readings

    def fail_all(self, error: GatewayError) -> None:
        for instance in self.instances:
            instance.tracker.fail_all(error)

    async def stop(self) -> None:
        for task in list(self._recycles):
            task.cancel()
        await asyncio.gather(*(instance.stop() for instance in self.instances))
