"""Progress webhooks: a job's `job.started` and `job.progress` events, POSTed to the
`progress_webhook` its request named, signed and retried as its outcome webhook is.

Best effort, and never in the way. Each job has a feed that holds at most one event waiting
(`job.started` first; then the newest progress, which replaces an older one not yet sent), sent
from the feed's own task, at most PROGRESS_WEBHOOK_PER_S a second. Deliveries over all jobs are
bounded (PROGRESS_WEBHOOK_CONCURRENCY) and go through a sender of their own (its own
connections), so a receiver that hangs or fails holds one delivery of its own job, never the
job, its outcome webhook, or more memory. A delivery that fails after its retries is dropped;
when the job ends, what still waits is dropped too (its outcome webhook says how it ended).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from app.comfy.graph import Graph
from app.jobs.records import TERMINAL, JobEvent, JobRecord
from app.jobs.webhooks import WebhookSender, now_iso


class ProgressFeed:
    """One job's progress deliveries: started once, then the newest progress, throttled."""

    def __init__(self, hooks: ProgressHooks, url: str, job_id: str, graph: Callable[[], Graph],
                 metadata: dict[str, Any]) -> None:  # fmt: skip
        self.hooks = hooks
        self.url = url
        self.job_id = job_id
        self.graph = graph  # the graph as ComfyUI has it: its nodes' class_type
        self.metadata = metadata
        self.started: dict[str, Any] | None = None
        self.progress: dict[str, Any] | None = None  # the newest, not sent yet
        self.ever_started = False
        self.ended = False
        self.sent = 0
        self.task: asyncio.Task[None] | None = None

    def on_event(self, event: JobEvent, record: JobRecord) -> None:
        """A listener of the job's record: what it does becomes what the receiver hears."""
        if event.type == "running" and not self.ever_started:  # once, whatever the attempts
            self.ever_started = True
            self.started = self._payload("job.started", {})
            self._wake()
        elif event.type == "progress":
            self.progress = self._payload("job.progress", self._progress(event.data))
            self._wake()
        elif event.type in TERMINAL:
            self.ended = True
            self.started = self.progress = None  # the outcome webhook says the rest

    def _progress(self, data: dict[str, Any]) -> dict[str, Any]:
        node = data.get("node")
        step, top = data.get("value", 0), data.get("max", 0)
        graph_node = self.graph().get(str(node)) if node is not None else None
        percent = round(100 * step / top, 1) if isinstance(top, int | float) and top > 0 else 0.0
        return {
            "node": None if node is None else str(node),
            "node_name": graph_node.get("class_type") if isinstance(graph_node, dict) else None,
            "step": step,
            "max": top,
            "percent": percent,
        }

    def _payload(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        return {"type": kind, "timestamp": now_iso(), "id": self.job_id, **data, **self.metadata}

    def _wake(self) -> None:
        if self.task is None and not self.ended:
            self.task = asyncio.create_task(self._send(), name=f"progress-{self.job_id}")
            self.hooks.tasks.add(self.task)
            self.task.add_done_callback(self.hooks.tasks.discard)

    def _take(self) -> dict[str, Any] | None:
        payload, self.started = self.started, None
        if payload is None:
            payload, self.progress = self.progress, None
        return payload

    async def _send(self) -> None:
        try:
            while (payload := self._take()) is not None:
                self.sent += 1
                msg_id = f"{self.job_id}.{payload['type']}.{self.sent}"
                async with self.hooks.slots:
                    await self.hooks.sender.deliver(
                        self.url, payload, msg_id=msg_id, job_id=self.job_id
                    )
                await asyncio.sleep(self.hooks.interval_s)  # the throttle: newest wins meanwhile
        finally:
            self.task = None  # no await since the last _take(): the next event starts a new one


class ProgressHooks:
    """Makes each job's feed, and bounds the deliveries of all of them."""

    def __init__(self, sender: WebhookSender, *, per_s: float, concurrency: int) -> None:
        self.sender = sender
        self.interval_s = 1 / per_s
        self.slots = asyncio.Semaphore(concurrency)
        self.tasks: set[asyncio.Task[None]] = set()

    def feed(
        self, url: str, job_id: str, graph: Callable[[], Graph], key_name: str | None = None
    ) -> ProgressFeed:
        """A job's feed; add its `on_event` to the job record's listeners.

        `key_name`: the name of the API key whose job it is, sent as `metadata.key_name`."""
        metadata = {"metadata": {"key_name": key_name}} if key_name is not None else {}
        return ProgressFeed(self, url, job_id, graph, metadata)

    async def aclose(self) -> None:
        """Stop every delivery (progress is not worth a shutdown's wait), then the sender."""
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.sender.aclose()
