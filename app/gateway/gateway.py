"""Gateway: the composition root: one gateway process's services, wired once.

The job mode is chosen here, once (app.gateway.backend): a lone gateway's own queue, or a
fleet's in Redis (QUEUE_URL). Starting and stopping the services in order is the lifecycle's
(app.gateway.lifecycle); whether the gateway takes work, readiness's; each key's max_jobs,
quotas'; jobs go through the door (`gateway.door`).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from app import __version__
from app.comfy.graph import Graph
from app.core.addresses import AddressPolicy
from app.core.keys import owner_label
from app.core.metrics import GatewayMetrics
from app.core.outcome import JobOutcome
from app.core.readings import GatewayState
from app.core.settings import Settings
from app.fleet.fleet import Fleet
from app.gateway.backend import JobBackend
from app.gateway.comfy import ComfyAccess
from app.gateway.door import JobDoor
from app.gateway.fleet_backend import FleetBackend
from app.gateway.lifecycle import Lifecycle
from app.gateway.local_backend import LocalBackend
from app.gateway.pool import Pool
from app.gateway.quotas import Quotas
from app.gateway.readiness import Readiness
from app.jobs.finish import Finisher
from app.jobs.history import JobHistory
from app.jobs.inputs import InputFiles
from app.jobs.progress_hooks import ProgressHooks
from app.jobs.runner import JobRunner
from app.jobs.spool import Spool
from app.jobs.uploads import Uploader
from app.jobs.webhooks import SystemEvents, WebhookSender
from app.models.grants import Grants
from app.models.store import ModelStore


class Gateway:
    """Wires the services of one gateway process: the pool of ComfyUI instances, the job runner
    and the job backend, the delivery services, the model store; `lifecycle` starts and stops
    them, `door` is the one door for jobs, `comfy` and `models` what routes may read."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.version = __version__
        self.metrics = GatewayMetrics(self.version)
        self.pool = Pool(settings)
        self.webhooks = WebhookSender(settings)
        # Progress webhooks have a sender (and connections) of their own: never in the way.
        self.progress = ProgressHooks(
            WebhookSender(settings, routine=True),
            per_s=settings.progress_webhook_per_s,
            concurrency=settings.progress_webhook_concurrency,
        )
        self.inputs = InputFiles(settings, self.pool.first.client)
        addresses = AddressPolicy.from_settings(settings)
        self.uploader = Uploader.from_settings(settings, addresses)
        self.grants = Grants(settings)  # what each key may spend of what keys share
        self.system_events = self._system_events(settings)
        if self.system_events is not None:  # comfyui-api's storage.file_* events
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
        self.spool = Spool(settings.output_spool_dir)
        finisher = Finisher(
            settings.comfy_output_dir,
            self.uploader,
            self.spool,
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
            progress=self.progress,
        )
        self.jobs.metrics = self.webhooks.metrics = self.metrics
        self.jobs.preview_max_per_s = settings.preview_max_per_s
        self.inputs.metrics = self.uploader.metrics = self.metrics
        self.backend = self._job_backend(settings, addresses)
        self.comfy = ComfyAccess(self.pool, lambda: self.lifecycle.stopping, settings)
        self.lifecycle = Lifecycle(
            settings,
            self.pool,
            self.jobs,
            self.backend,
            self.webhooks,
            self.system_events,
            closing=[
                self.webhooks,
                self.progress,
                self.inputs,
                self.uploader,
                self.models,
                self.comfy,
                self.spool,
            ],
        )
        self.readiness = Readiness(
            self.lifecycle, self.backend, self.pool, settings.max_queue_depth
        )
        self.quotas = Quotas(settings.key_limits, self.backend, self.metrics)
        self.door = JobDoor(self.backend, self.readiness, self.quotas, self.grants, self.jobs)
        self.metrics.watch(  # what /metrics reads when it is scraped
            GatewayState(
                queue_depth=lambda: self.readiness.queue_depth,
                max_queue_depth=settings.max_queue_depth,
                ready=lambda: self.readiness.not_ready_reason() is None,
                instances=self.pool.readings,
                system_events_dropped=lambda: (
                    self.system_events.dropped if self.system_events else 0
                ),
            )
        )

    def _job_backend(self, settings: Settings, addresses: AddressPolicy) -> JobBackend:
        """The job mode, chosen once: nothing above the gateway asks which it is."""
        if settings.queue_url is None:
            return LocalBackend(self.jobs, self.pool)
        fleet = Fleet(settings, self.jobs, self.pool.scheduler, self.webhooks, addresses)
        return FleetBackend(fleet, self.jobs)  # jobs are queued in Redis (QUEUE_URL)

    def _system_events(self, settings: Settings) -> SystemEvents | None:
        """SYSTEM_WEBHOOK_URL's sender, told of every instance's events, or None."""
        if not (settings.system_webhook_url and settings.system_webhook_events):
            return None
        events = SystemEvents(
            self.webhooks,
            str(settings.system_webhook_url),
            settings.system_webhook_events,
            settings.system_event_metadata(),
        )
        for instance in self.pool.instances:
            instance.tracker.listeners.append(self._forward_system_event)
        return events

    def _forward_system_event(self, kind: str, data: dict[str, Any]) -> None:
        assert self.system_events is not None
        owner, request_id = self.jobs.by_prompt.get(str(data.get("prompt_id")), (None, None))
        key_name = owner_label(owner) if owner is not None else None
        self.system_events.offer(kind, data, request_id, key_name)

    async def warm_up(self, graph: Graph) -> JobOutcome:
        """Run the warmup graph on every instance (each loads its models): the one job that runs
        before the gateway accepts work."""
        results = await asyncio.gather(
            *(
                self.jobs.run(f"warmup-{i.index}-{uuid.uuid4().hex[:8]}", graph, "warmup", only=i)
                for i in self.pool.instances
            )
        )
        return results[0]

    def instances(self) -> list[dict[str, Any]]:
        """Each ComfyUI instance: its state, GPU, jobs, jobs run, restarts, version.

        With API keys on, the job ids (a tenant's, and /health is open) show as `hidden`.
        """
        found = [instance.info() for instance in self.pool.instances]
        if self.settings.api_keys_on:
            for info in found:
                info["jobs"] = ["hidden"] * len(info["jobs"])
        return found
