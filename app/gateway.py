"""Gateway: the services of one gateway process and their start-up and shutdown order."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import uuid
from collections.abc import Callable

from app import __version__
from app.comfy.client import ComfyClient
from app.comfy.process import ComfyProcess, ComfyStartError
from app.comfy.tracker import PromptTracker
from app.errors import ComfyUnavailable, QueueFull
from app.jobs import JobRunner
from app.media import OutputStore
from app.settings import Settings

log = logging.getLogger(__name__)


class Gateway:
    """Owns the ComfyUI child, the HTTP client, the event tracker and the job runner."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.version = __version__
        self.process = ComfyProcess(settings)
        self.client = ComfyClient(settings.comfy_url)
        self.tracker = PromptTracker(self.client, client_id=uuid.uuid4().hex)
        self.jobs = JobRunner(
            self.client,
            self.tracker,
            OutputStore(settings.comfy_output_dir, self.client),
            timeout_s=settings.prompt_timeout_s,
            keep_outputs=settings.keep_outputs,
        )
        self.started = False
        self.stopping = False
        self.exit_code = 0
        # How to stop the whole process when ComfyUI is gone for good; __main__ sets it.
        self.request_exit: Callable[[], None] = lambda: os.kill(os.getpid(), signal.SIGTERM)
        self._supervisor: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start ComfyUI, connect to its events, and begin watching it."""
        await self.process.start()
        self.tracker.start()
        try:
            await self.tracker.wait_connected(timeout_s=30)
        except TimeoutError:
            await self.stop()
            raise ComfyStartError(
                f"ComfyUI answers HTTP but its websocket {self.tracker.ws_url} did not connect"
            ) from None
        self._supervisor = asyncio.create_task(
            self.process.supervise(self._comfy_exited, self._comfy_restarted)
        )
        self.started = True
        log.info("gateway %s ready: ComfyUI at %s", self.version, self.settings.comfy_url)

    async def stop(self) -> None:
        """Stop taking work, let in-flight jobs finish within the grace period, stop ComfyUI."""
        self.stopping = True
        if self.jobs.active:
            log.info(
                "waiting up to %.0fs for %d job(s)",
                self.settings.shutdown_grace_s,
                len(self.jobs.active),
            )
            await self.jobs.drain(self.settings.shutdown_grace_s)
        self.tracker.fail_all(ComfyUnavailable("the gateway is shutting down"))
        await self.tracker.close()
        await self.process.stop()
        await self.client.aclose()

    async def _comfy_exited(self, code: int) -> None:
        self.tracker.fail_all(
            ComfyUnavailable(f"ComfyUI exited (code {code}) while the job was running")
        )
        if not self.settings.always_restart_comfyui:
            log.critical(
                "ComfyUI exited with code %s and ALWAYS_RESTART_COMFYUI is off: "
                "the gateway is shutting down",
                code,
            )
            self.exit_code = 1
            self.request_exit()

    async def _comfy_restarted(self) -> None:
        log.info("ComfyUI is back (restart %d)", self.process.restarts)

    @property
    def queue_depth(self) -> int:
        # ComfyUI's count lags a submission by one status event; our own count does not.
        return max(self.tracker.queue_depth, len(self.jobs.active))

    def unavailable_reason(self) -> str | None:
        """Why no job can run now, or None."""
        if not self.started:
            return "starting"
        if self.stopping:
            return "shutting down"
        if not self.process.running:
            return "ComfyUI is not running (restarting)"
        if not self.tracker.connected.is_set():
            return "not connected to ComfyUI's event stream"
        return None

    def queue_full_reason(self) -> str | None:
        cap = self.settings.max_queue_depth
        if cap and self.queue_depth >= cap:
            return f"queue is full ({self.queue_depth} of MAX_QUEUE_DEPTH {cap})"
        return None

    def not_ready_reason(self) -> str | None:
        """Why this gateway should get no traffic now, or None when it should."""
        return self.unavailable_reason() or self.queue_full_reason()

    def check_accepting(self) -> None:
        """Raise the error a new job should get now, if any."""
        if reason := self.unavailable_reason():
            raise ComfyUnavailable(f"the gateway cannot take jobs now: {reason}")
        if reason := self.queue_full_reason():
            raise QueueFull(f"the {reason}; retry later", headers={"Retry-After": "5"})
