"""ComfyInstance: one ComfyUI of the pool with its process, HTTP client and event tracker.

The gateway runs one instance per GPU (COMFYUI_GPUS), or COMFYUI_INSTANCES of them, or just one.
An instance is started, watched and restarted on its own; what it is doing (the jobs on it, the
models it last loaded, how many jobs it ran) is kept here for the scheduler and for /health.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

from app.comfy.client import ComfyClient
from app.comfy.process import ComfyProcess, ComfyStartError
from app.comfy.tracker import PromptTracker
from app.core.settings import Settings


class InstanceState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    RECYCLING = "recycling"  # restarting on purpose; its jobs were done first
    RESTARTING = "restarting"  # it exited; restarting with back-off
    DOWN = "down"  # it exited and ALWAYS_RESTART_COMFYUI is off
    STOPPED = "stopped"


class ComfyInstance:
    """One ComfyUI process of the pool and the gateway's connection to it."""

    def __init__(self, settings: Settings, index: int) -> None:
        self.index = index
        self.process = ComfyProcess(settings, index)
        self.client = ComfyClient(settings.instance_url(index))
        self.tracker = PromptTracker(
            self.client, client_id=uuid.uuid4().hex, silence_s=settings.event_silence_check_s
        )
        self.name = self.process.name
        self.gpu = self.process.gpu
        self.state = InstanceState.STARTING
        self.jobs: set[str] = set()  # request ids running (or queued) on it now
        self.jobs_run = 0
        self.jobs_since_start = 0
        self.models: frozenset[str] = frozenset()  # what its last job loaded: model affinity
        self.idle_since = time.monotonic()
        self.draining = False  # takes no new job: it is about to recycle
        self._supervisor: asyncio.Task[None] | None = None

    @property
    def comfy_queue(self) -> int:
        """Prompts queued or running in this ComfyUI, any client's (from its status events)."""
        return self.tracker.queue_depth

    @property
    def accepting(self) -> bool:
        """Running, connected to, and not about to recycle: it may be given a job."""
        return (
            self.state is InstanceState.READY
            and not self.draining
            and self.process.running
            and self.tracker.connected.is_set()
        )

    async def start(self) -> None:
        """Start ComfyUI, learn what it offers, connect to its events; ComfyStartError if not."""
        self.state = InstanceState.STARTING
        await self.process.start()
        await self.client.probe()
        self.tracker.start()
        try:
            await self.tracker.wait_connected(timeout_s=30)
        except TimeoutError:
            raise ComfyStartError(
                f"{self.name} answers HTTP but its websocket {self.tracker.ws_url} did not connect"
            ) from None
        self.state = InstanceState.READY

    def supervise(
        self,
        on_exit: Callable[[ComfyInstance, int], Awaitable[None]],
        on_back: Callable[[ComfyInstance], Awaitable[None]],
    ) -> None:
        """Watch the process from now on; the callbacks hear of a crash and of a return."""

        async def exited(code: int) -> None:
            self.state = (
                InstanceState.RESTARTING
                if self.process.settings.always_restart_comfyui
                else InstanceState.DOWN
            )
            await on_exit(self, code)

        async def restarted() -> None:
            self.jobs_since_start = 0
            self.draining = False
            self.models = frozenset()  # a fresh process has loaded nothing
            try:
                await self.client.probe()
            finally:
                self.state = InstanceState.READY
            await on_back(self)

        self._supervisor = asyncio.create_task(
            self.process.supervise(exited, restarted), name=f"supervise-{self.index}"
        )

    async def recycle(self) -> None:
        """Restart it on purpose now (its jobs are done); the supervisor brings it back."""
        self.state = InstanceState.RECYCLING
        await self.process.recycle()

    def rss_mb(self) -> float | None:
        """Resident memory of the ComfyUI process, in MB (None when it is not running)."""
        proc = self.process.proc
        if proc is None or not self.process.running:
            return None
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return None

    def info(self) -> dict[str, Any]:
        """What /health says of it."""
        return {
            "index": self.index,
            "state": self.state.value,
            "gpu": self.gpu,
            "port": self.process.port,
            "jobs": sorted(self.jobs),
            "jobs_run": self.jobs_run,
            "restarts": self.process.restarts,
            "comfyui_version": self.client.version,
        }

    async def stop(self) -> None:
        self.state = InstanceState.STOPPED
        await self.tracker.close()
        await self.process.stop()
        if self._supervisor is not None:
            self._supervisor.cancel()
        await self.client.aclose()
