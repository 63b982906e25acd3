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
from app.comfy.graph import Graph
from app.comfy.instance import ComfyInstance
from app.comfy.process import ComfyStartError
from app.core.addresses import AddressPolicy
from app.core.errors import ComfyUnavailable
from app.core.keys import owner_label
from app.core.metrics import GatewayMetrics
from app.core.readings import GatewayState
from app.core.records import JobHistory
from app.core.schemas import PromptResponse
from app.core.settings import Settings
from app.fleet.fleet import Fleet
from app.gateway.comfy import ComfyAccess
from app.gateway.door import JobDoor
from app.gateway.pool import Pool
from app.jobs.finish import Finisher
from app.jobs.inputs import InputFiles
from app.jobs.runner import JobRunner
from app.jobs.uploads import Uploader
from app.jobs.webhooks import SystemEvents, WebhookSender
from app.models.grants import Grants
from app.models.store import ModelStore

log = logging.getLogger(__name__)


class Gateway(JobDoor):
    """Owns the ComfyUI instances (the pool), the job runner and the delivery services; its
    JobDoor methods are the one door for jobs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.version = __version__
        self.metrics = GatewayMetrics(self.version)
        self.pool = Pool(settings)
        self.pool.on_down = self._instance_down
        self.webhooks = WebhookSender(settings)
        self.inputs = InputFiles(settings, self.pool.first.client)
        addresses = AddressPolicy.from_settings(settings)
        self.uploader = Uploader.from_settings(settings, addresses)
        self.grants = Grants(settings)  # what each key may spend of what keys share
        self.system_events: SystemEvents | None = None
        if settings.system_webhook_url and settings.system_webhook_events:
            self.system_events = SystemEvents(
                self.webhooks,
                str(settings.system_webhook_url),
                settings.system_webhook_events,
                settings.system_meta,
            )
            for instance in self.pool.instances:
                instance.tracker.listeners.append(self._forward_system_event)
            self.inputs.on_event = self.uploader.on_event = self.system_events.announce
        # Downloads and their cache: ComfyUI's model listing is the first instance's (every
        # instance searches the same folders); jobs resolve model URLs where they run.
        self.models = ModelStore(
            settings,
            self.pool.first.client,
            addresses,
            on_event=self.system_events.announce if self.system_events else None,
            grants=self.grants,
            metrics=self.metrics,
        )
        finisher = Finisher(
            settings.comfy_output_dir,
            self.uploader,
            keep_outputs=settings.keep_outputs,
            timeout_s=settings.prompt_timeout_s,
        )
        self.jobs = JobRunner(
            self.pool.scheduler,
            self.inputs,
            finisher,
            JobHistory(
                max_finished=settings.job_history_max,
                ttl_s=settings.job_history_ttl_s,
                max_bytes=int(settings.job_history_max_mb * 2**20),
            ),
            self.webhooks,
            self.uploader,
            addresses,
            self.models,
            timeout_s=settings.prompt_timeout_s,
            retries=settings.job_retries,
        )
        self.fleet: Fleet | None = None  # with QUEUE_URL: jobs are queued in Redis
        if settings.queue_url is not None:
            self.fleet = Fleet(settings, self.jobs, self.pool.scheduler, self.webhooks, addresses)
        self.comfy = ComfyAccess(self.pool, lambda: self.stopping, settings)
        self.metrics.watch(  # what /metrics reads when it is scraped
            GatewayState(
                queue_depth=lambda: self.queue_depth,
                max_queue_depth=settings.max_queue_depth,
                ready=lambda: self.not_ready_reason() is None,
                instances=self.pool.readings,
                system_events_dropped=lambda: (
                    self.system_events.dropped if self.system_events else 0
                ),
            )
        )
        self.jobs.metrics = self.webhooks.metrics = self.metrics
        self.inputs.metrics = self.uploader.metrics = self.metrics
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

    def _forward_system_event(self, kind: str, data: dict[str, Any]) -> None:
        assert self.system_events is not None
        owner, request_id = self.jobs.by_prompt.get(str(data.get("prompt_id")), (None, None))
        key_name = owner_label(owner) if owner is not None else None
        self.system_events.offer(kind, data, request_id, key_name)

    async def warm_up(self, graph: Graph) -> PromptResponse:
        """Run the warmup graph on every instance (each loads its models): the one job that runs
        before the gateway accepts work."""
        results = await asyncio.gather(
            *(
                self.jobs.run(f"warmup-{i.index}-{uuid.uuid4().hex[:8]}", graph, "warmup", only=i)
                for i in self.pool.instances
            )
        )
        return results[0]

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
        if self.fleet is not None:
            await self.fleet.start()
        self.started = True
        count = len(self.pool.instances)
        where = f"{count} instances from {self.settings.comfy_url}" if count > 1 else ""
        log.info("gateway %s ready: ComfyUI at %s", self.version, where or self.settings.comfy_url)

    async def stop(self) -> None:
        """Stop taking work, let jobs and deliveries finish within the grace period, stop ComfyUI.

        Jobs still running (or waiting) when the grace period ends fail (503), and their failure
        is delivered before ComfyUI stops: every accepted job ends in exactly one outcome.
        """
        if self._stopped:
            return
        self._stopped = True
        deadline = self.begin_shutdown()
        if self.jobs.tasks:
            grace_s = max(deadline - time.monotonic(), 0.0)
            log.info("waiting up to %.0fs for %d job(s)", grace_s, len(self.jobs.tasks))
            await self.jobs.drain(grace_s)
        if self.fleet is not None:
            # Past the grace period a fleet job is not failed but left to another gateway,
            # which takes it over once its visibility timeout passes.
            self.fleet.worker.abandon()
        gone = ComfyUnavailable("the gateway shut down before the job finished")
        self.pool.scheduler.fail_waiting(gone)
        self.pool.fail_all(gone)
        # Failure deliveries get what is left of the grace period, but never less than a try.
        leftover_s = max(deadline - time.monotonic(), self.settings.webhook_timeout_s)
        if not await self.jobs.drain(leftover_s):
            log.error(
                "%d job(s) could not deliver their outcome before shutdown", len(self.jobs.tasks)
            )
        if self.system_events is not None:
            await self.system_events.close(max(deadline - time.monotonic(), 1.0))
        if self.fleet is not None:
            await self.fleet.close(max(deadline - time.monotonic(), 1.0))
        await self.pool.stop()
        await self.webhooks.aclose()
        await self.inputs.aclose()
        await self.uploader.aclose()
        await self.models.aclose()
        await self.comfy.aclose()

    def begin_shutdown(self) -> float:
        """Stop taking work (and report not ready); the grace period's end, fixed at first call."""
        self.stopping = True
        if self.fleet is not None:
            self.fleet.worker.stop_pulling()
        if self.shutdown_deadline is None:
            self.shutdown_deadline = time.monotonic() + self.settings.shutdown_grace_s
        return self.shutdown_deadline

    def instances(self) -> list[dict[str, Any]]:
        """Each ComfyUI instance: its state, GPU, jobs, jobs run, restarts, version.

        With API keys on, the job ids (a tenant's, and /health is open) show as `hidden`.
        """
        found = [instance.info() for instance in self.pool.instances]
        if self.settings.api_keys_on:
            for info in found:
                info["jobs"] = ["hidden"] * len(info["jobs"])
        return found

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
