"""Gateway: the services of one gateway process and their start-up and shutdown order."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from app import __version__
from app.comfy.client import ComfyClient
from app.comfy.graph import Graph
from app.comfy.process import ComfyProcess, ComfyStartError
from app.comfy.tracker import PromptTracker
from app.core.addresses import AddressPolicy
from app.core.errors import ComfyUnavailable, GatewayError, NotFound, QueueFull
from app.core.metrics import GatewayMetrics, GatewayState
from app.core.options import JobOptions
from app.core.records import JobHistory, JobRecord
from app.core.schemas import PromptResponse
from app.core.settings import Settings
from app.gateway.comfy import ComfyAccess
from app.jobs.inputs import InputFiles
from app.jobs.model_store import ModelStore
from app.jobs.outputs import OutputStore
from app.jobs.runner import Job, JobRunner
from app.jobs.uploads import Uploader
from app.jobs.webhooks import SystemEvents, WebhookSender

log = logging.getLogger(__name__)


class Gateway:
    """Owns the ComfyUI child, the HTTP client, the event tracker and the job runner."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.version = __version__
        self.process = ComfyProcess(settings)
        self.client = ComfyClient(settings.comfy_url)
        self.tracker = PromptTracker(
            self.client, client_id=uuid.uuid4().hex, silence_s=settings.event_silence_check_s
        )
        self.webhooks = WebhookSender(settings)
        self.inputs = InputFiles(settings, self.client)
        addresses = AddressPolicy.from_settings(settings)
        self.uploader = Uploader(
            settings.http_upload_auth_header, settings.upload_timeout_s, addresses
        )
        self.jobs = JobRunner(
            self.client,
            self.tracker,
            self.inputs,
            OutputStore(settings.comfy_output_dir, self.client),
            JobHistory(
                max_finished=settings.job_history_max,
                ttl_s=settings.job_history_ttl_s,
                max_bytes=int(settings.job_history_max_mb * 2**20),
            ),
            self.webhooks,
            self.uploader,
            addresses,
            timeout_s=settings.prompt_timeout_s,
            keep_outputs=settings.keep_outputs,
        )
        self.system_events: SystemEvents | None = None
        if settings.system_webhook_url and settings.system_webhook_events:
            self.system_events = SystemEvents(
                self.webhooks,
                str(settings.system_webhook_url),
                settings.system_webhook_events,
                settings.system_meta,
            )
            self.tracker.listeners.append(self._forward_system_event)
        self.models = ModelStore(settings, self.client, addresses, self.system_events)
        self.comfy = ComfyAccess(self.client, self.tracker, self.process, lambda: self.stopping)
        self.metrics = GatewayMetrics(self.version)
        self.metrics.watch(gateway_state(self))
        self.jobs.metrics = self.webhooks.metrics = self.metrics
        self.inputs.metrics = self.uploader.metrics = self.models.metrics = self.metrics
        self.started = False
        self.stopping = False
        self.shutdown_deadline: float | None = None  # monotonic; set by begin_shutdown()
        self._stopped = False
        self.exit_code = 0
        # How to stop the whole process when ComfyUI is gone for good; __main__ sets it.
        self.request_exit: Callable[[], None] = lambda: os.kill(os.getpid(), signal.SIGTERM)
        self._supervisor: asyncio.Task[None] | None = None
        # Steps run once ComfyUI answers and before /health turns 200 (warmup, workflow
        # routes); one that raises ComfyStartError stops start-up with its message.
        self.on_start: list[Callable[[], Awaitable[None]]] = []

    def _forward_system_event(self, kind: str, data: dict[str, Any]) -> None:
        assert self.system_events is not None
        request_id = self.jobs.by_prompt.get(str(data.get("prompt_id")))
        self.system_events.offer(kind, data, request_id)

    async def warm_up(self, graph: Graph) -> PromptResponse:
        """Run the warmup graph: the one job that runs before the gateway accepts work."""
        return await self.jobs.run(f"warmup-{uuid.uuid4().hex[:8]}", graph, "warmup")

    async def start(self) -> None:
        """Start ComfyUI, connect to its events, and begin watching it."""
        if self.webhooks.key is None:
            log.info("WEBHOOK_SECRET is not set: webhook deliveries are not signed")
        if self.system_events is not None:
            self.system_events.start()
        await self.process.start()
        await self.client.probe()
        log.info(
            "ComfyUI %s (%s)",
            self.client.version,
            "jobs API" if self.client.jobs_api else "no jobs API: /history, /queue, /interrupt",
        )
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
        for step in self.on_start:
            await step()
        self.started = True
        log.info("gateway %s ready: ComfyUI at %s", self.version, self.settings.comfy_url)

    async def stop(self) -> None:
        """Stop taking work, let jobs and deliveries finish within the grace period, stop ComfyUI.

        Jobs still running when the grace period ends fail (503), and their failure is
        delivered before ComfyUI stops: every accepted job ends in exactly one outcome.
        """
        if self._stopped:
            return
        self._stopped = True
        deadline = self.begin_shutdown()
        if self.jobs.tasks:
            grace_s = max(deadline - time.monotonic(), 0.0)
            log.info("waiting up to %.0fs for %d job(s)", grace_s, len(self.jobs.tasks))
            await self.jobs.drain(grace_s)
        self.tracker.fail_all(ComfyUnavailable("the gateway shut down before the job finished"))
        # Failure deliveries get what is left of the grace period, but never less than a try.
        leftover_s = max(deadline - time.monotonic(), self.settings.webhook_timeout_s)
        if not await self.jobs.drain(leftover_s):
            log.error(
                "%d job(s) could not deliver their outcome before shutdown", len(self.jobs.tasks)
            )
        if self.system_events is not None:
            await self.system_events.close(max(deadline - time.monotonic(), 1.0))
        await self.tracker.close()
        await self.process.stop()
        await self.client.aclose()
        await self.webhooks.aclose()
        await self.inputs.aclose()
        await self.uploader.aclose()
        await self.models.aclose()

    def begin_shutdown(self) -> float:
        """Stop taking work (and report not ready); the grace period's end, fixed at first call."""
        self.stopping = True
        if self.shutdown_deadline is None:
            self.shutdown_deadline = time.monotonic() + self.settings.shutdown_grace_s
        return self.shutdown_deadline

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
        try:
            await self.client.probe()  # the same command, but its files may have been updated
        except GatewayError as e:
            log.warning("could not read the restarted ComfyUI's version: %s", e)

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

    # -- the one door for jobs: routes and facades use these, never the services behind ------
    async def start_job(
        self,
        request_id: str,
        graph: Graph,
        options: JobOptions | None = None,
        *,
        echo_input: dict[str, Any] | None = None,
        workflow: str = "prompt",
    ) -> Job:
        """Accept a job, if the gateway takes work now; ComfyUI's refusal raises here."""
        self.check_accepting()
        # Model URLs become files first; the job holds its models until its task ends.
        graph, held = await self.models.prepare(graph, options)
        return await held.for_job(
            self.jobs.start(request_id, graph, options, echo_input=echo_input, workflow=workflow)
        )

    async def run_job(
        self, request_id: str, graph: Graph, workflow: str = "prompt"
    ) -> PromptResponse:
        """Accept a job and wait for its outputs; a GatewayError says why there are none."""
        job = await self.start_job(request_id, graph, workflow=workflow)
        assert job.task is not None
        return await asyncio.shield(job.task)

    def job(self, request_id: str) -> JobRecord:
        """What this gateway process knows of a job, running or recently finished."""
        record = self.jobs.history.get(request_id)
        if record is None:
            raise NotFound(
                f"this gateway process knows no job {request_id!r} (unknown, or finished too "
                "long ago)",
                location="id",
            )
        return record

    def running_job(self, request_id: str) -> JobRecord | None:
        """A job that is queued or running now, or None."""
        job = self.jobs.active.get(request_id)
        return job.record if job is not None else None

    @property
    def running_jobs(self) -> int:
        return len(self.jobs.active)

    async def queue_position(self, record: JobRecord) -> int | None:
        """How many jobs are ahead of a queued one in ComfyUI's queue, or None."""
        if record.status != "queued":
            return None
        _, pending = await self.client.queue()
        return pending.index(record.prompt_id) if record.prompt_id in pending else None

    async def interrupt(self, request_id: str) -> None:
        """Cancel a queued or running job; its own request then answers 409 `interrupted`."""
        await self.jobs.interrupt(request_id)


def gateway_state(gateway: Gateway) -> GatewayState:
    """The callbacks that read a Gateway's state."""
    process, tracker = gateway.process, gateway.tracker
    return GatewayState(
        queue_depth=lambda: gateway.queue_depth,
        max_queue_depth=gateway.settings.max_queue_depth,
        comfy_up=lambda: process.running and tracker.connected.is_set(),
        ready=lambda: gateway.not_ready_reason() is None,
        comfy_restarts=lambda: process.restarts,
        comfy_pid=lambda: process.proc.pid if process.proc and process.running else None,
        system_events_dropped=lambda: gateway.system_events.dropped if gateway.system_events else 0,
        comfy_version=lambda: gateway.client.version,
    )
