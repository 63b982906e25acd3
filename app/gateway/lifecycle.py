"""Lifecycle: a gateway's start and shutdown, in order, and its exit when ComfyUI is gone.

Start: the system events, the pool of ComfyUI instances, the start-up steps (`on_start`:
models, warmup, workflow routes), then the job backend (a fleet's gateway begins pulling jobs);
only then `started` (/health turns 200). Shutdown: stop taking work, let jobs and deliveries
finish within the grace period, fail what is left (and deliver those failures), then close the
services, ComfyUI last but the connections.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from app import __version__
from app.comfy.instance import ComfyInstance
from app.comfy.process import ComfyStartError
from app.core.errors import ComfyUnavailable
from app.core.settings import Settings
from app.gateway.backend import JobBackend
from app.gateway.pool import Pool
from app.jobs.runner import JobRunner
from app.jobs.webhooks import SystemEvents, WebhookSender

log = logging.getLogger(__name__)


class Closable(Protocol):
    async def aclose(self) -> None: ...


class Lifecycle:
    """Starts and stops a gateway's services in order; knows whether it started or stops."""

    def __init__(
        self,
        settings: Settings,
        pool: Pool,
        runner: JobRunner,
        backend: JobBackend,
        webhooks: WebhookSender,
        system_events: SystemEvents | None,
        closing: Sequence[Closable],
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.runner = runner
        self.backend = backend
        self.webhooks = webhooks
        self.system_events = system_events
        self.closing = closing  # closed last, in this order, after the pool stopped
        self.started = False
        self.stopping = False
        self.shutdown_deadline: float | None = None  # monotonic; set by begin_shutdown()
        self._stopped = False
        self.exit_code = 0
        # How to stop the whole process when ComfyUI is gone for good; __main__ sets it.
        self.request_exit: Callable[[], None] = lambda: os.kill(os.getpid(), signal.SIGTERM)
        # Steps run once ComfyUI answers and before /health turns 200 (warmup, workflow
        # routes); one that raises ComfyStartError stops start-up with its message.
        self.on_start: list[Callable[[], Awaitable[None]]] = []
        pool.on_down = self._instance_down

    async def start(self) -> None:
        """Start every ComfyUI instance, connect to their events, and begin watching them."""
        if self.webhooks.key is None:
            log.info("WEBHOOK_SECRET is not set: webhook deliveries are not signed")
        if self.system_events is not None:
            self.system_events.start()
        try:
            await self.pool.start()
        except ComfyStartError:
            await self.stop()
            raise
        for instance in self.pool.instances:
            api = "jobs API" if instance.client.jobs_api else "no jobs API: /history, /queue"
            log.info("%s %s (%s)", instance.name, instance.client.version, api)
        for step in self.on_start:
            await step()
        await self.backend.start()
        self.started = True
        count = len(self.pool.instances)
        where = f"{count} instances from {self.settings.comfy_url}" if count > 1 else ""
        log.info("gateway %s ready: ComfyUI at %s", __version__, where or self.settings.comfy_url)

    async def stop(self) -> None:
        """Stop taking work, let jobs and deliveries finish within the grace period, stop ComfyUI.

        Jobs still running (or waiting) when the grace period ends fail (503), and their failure
        is delivered before ComfyUI stops: every accepted job ends in exactly one outcome.
        """
        if self._stopped:
            return
        self._stopped = True
        deadline = self.begin_shutdown()
        runner = self.runner
        if runner.tasks:
            grace_s = max(deadline - time.monotonic(), 0.0)
            log.info("waiting up to %.0fs for %d job(s)", grace_s, len(runner.tasks))
            await runner.drain(grace_s)
        self.backend.abandon()
        gone = ComfyUnavailable("the gateway shut down before the job finished")
        self.pool.scheduler.fail_waiting(gone)
        self.pool.fail_all(gone)
        # Failure deliveries get what is left of the grace period, but never less than a try.
        leftover_s = max(deadline - time.monotonic(), self.settings.webhook_timeout_s)
        if not await runner.drain(leftover_s):
            log.error(
                "%d job(s) could not deliver their outcome before shutdown", len(runner.tasks)
            )
        if self.system_events is not None:
            await self.system_events.close(max(deadline - time.monotonic(), 1.0))
        await self.backend.close(max(deadline - time.monotonic(), 1.0))
        await self.pool.stop()
        for service in self.closing:
            await service.aclose()

    def begin_shutdown(self) -> float:
        """Stop taking work (and report not ready); the grace period's end, fixed at first call."""
        self.stopping = True
        self.backend.stop_taking()
        if self.shutdown_deadline is None:
            self.shutdown_deadline = time.monotonic() + self.settings.shutdown_grace_s
        return self.shutdown_deadline

    async def _instance_down(self, instance: ComfyInstance, code: int) -> None:
        """An instance exited and ALWAYS_RESTART_COMFYUI is off: it stays down; the gateway
        exits when none is left."""
        if self.pool.alive:
            log.error(
                "%s exited with code %s and ALWAYS_RESTART_COMFYUI is off: it stays down, the "
                "other instances serve",
                instance.name, code,
            )  # fmt: skip
            return
        log.critical(
            "ComfyUI exited with code %s and ALWAYS_RESTART_COMFYUI is off: "
            "the gateway is shutting down",
            code,
        )
        self.exit_code = 1
        self.request_exit()
