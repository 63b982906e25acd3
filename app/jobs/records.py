"""JobRecord: one job's status, progress and event log (app.jobs.history keeps them).

A running job also keeps its newest latent preview (`JobRecord.preview`, app.jobs.preview),
outside the event log: followers get a `preview` event when one is published, never a backlog.

This is a convenience of one gateway process (GET /prompt/{id}, its SSE stream), not shared
state: behind a load balancer, ask the gateway that took the job, or use webhooks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.comfy.previews import PreviewFrame
from app.core.errors import Interrupted
from app.core.outcome import JobOutcome
from app.core.status import JobStatus
from app.jobs.preview import Preview, PreviewThrottle

TERMINAL: frozenset[str] = frozenset({"complete", "failed"})
# A job's id is its owner's: (the id of the API key that made it, or None; the request id).
JobKey = tuple[str | None, str]


@dataclass(frozen=True)
class JobEvent:
    """One event of a job's stream; ids count up from 1 per job."""

    id: int
    # queued, running, executing, progress, complete, failed; and preview, which is not kept
    # in the log: its id is that of the event before it
    type: str
    data: dict[str, Any]


class JobView(Protocol):
    """What a job's reader sees of it: its record in this process (JobRecord), or, in a fleet,
    in Redis (app.fleet.records.RemoteRecord)."""

    @property
    def id(self) -> str: ...

    @property
    def prompt_id(self) -> str: ...

    @property
    def workflow(self) -> str: ...

    @property
    def owner(self) -> str | None: ...

    @property
    def status(self) -> str: ...

    @property
    def progress(self) -> dict[str, Any]: ...

    @property
    def error(self) -> dict[str, Any] | None: ...

    @property
    def result(self) -> dict[str, Any] | None: ...

    @property
    def outcome(self) -> JobOutcome | None: ...

    @property
    def instance(self) -> int | None: ...

    @property
    def finished(self) -> bool: ...

    @property
    def last_event_id(self) -> int: ...

    @property
    def preview(self) -> Preview | None: ...

    def follow(
        self, after: int = 0, *, idle_s: float | None = None
    ) -> AsyncIterator[JobEvent | None]: ...


@dataclass
class JobRecord:
    """What one job has done so far, and a way to wait for what it does next."""

    id: str
    prompt_id: str
    workflow: str = "prompt"  # what built the graph: `prompt`, or a workflow such as sd15/txt2img
    owner: str | None = None  # the id of the API key that made it (app.core.keys); None: no keys
    instance: int | None = None  # the ComfyUI instance it was last submitted to
    status: JobStatus = "queued"
    progress: dict[str, Any] = field(default_factory=lambda: {"value": 0, "max": 0, "node": None})
    error: dict[str, Any] | None = None
    outcome: JobOutcome | None = None  # once it ended (succeeded, or failed with its error)
    result: dict[str, Any] | None = None  # the outcome's /prompt body (its `complete` event)
    events: list[JobEvent] = field(default_factory=list)
    finished_at: float | None = None  # monotonic
    # Told of each event as it happens (a fleet gateway copies them into Redis).
    listeners: list[Callable[[JobEvent, JobRecord], None]] = field(default_factory=list)
    node_names: dict[str, str] = field(default_factory=dict)  # node id -> title or class_type
    preview: Preview | None = None  # the newest latent preview while it runs
    preview_max_per_s: float = 4.0  # PREVIEW_MAX_PER_S
    # Told of each preview as it is published (a fleet gateway sends it over pub/sub).
    preview_listeners: list[Callable[[Preview, JobRecord], None]] = field(default_factory=list)
    previews_published: int = 0
    _throttle: PreviewThrottle | None = None
    _result_bytes: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    @property
    def key(self) -> JobKey:
        return self.owner, self.id

    @property
    def last_event_id(self) -> int:
        return len(self.events)

    @property
    def result_bytes(self) -> int:
        """Roughly what the kept outcome costs: its files' bytes, in memory or in the spool
        (counted once, when it ends; app.jobs.history adds it up as records finish)."""
        return self._result_bytes

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        event = JobEvent(len(self.events) + 1, kind, data)
        self.events.append(event)
        for listener in self.listeners:
            listener(event, self)
        self._wake()

    def _wake(self) -> None:
        """Wake every waiting subscriber, then give later ones a fresh event to wait on."""
        self._changed.set()
        self._changed = asyncio.Event()

    def on_preview(self, frame: PreviewFrame, node: str | None) -> None:
        """Keep a latent preview of this job's prompt (the tracker calls this); the throttle
        publishes it."""
        if self.finished:
            return
        step, most = self.progress.get("value", 0), self.progress.get("max", 0)
        at = time.time()
        name = self.name_of(node)
        self.preview = Preview(frame.image, frame.media_type, node, name, step, most, at)
        if self._throttle is None:
            self._throttle = PreviewThrottle(self.preview_max_per_s, self._publish_preview)
        self._throttle.offer()

    def _publish_preview(self) -> None:
        if self.preview is None or self.finished:
            return
        self.previews_published += 1
        for listener in self.preview_listeners:
            listener(self.preview, self)
        self._wake()

    def _end_previews(self) -> None:
        if self._throttle is not None:
            self._throttle.close()
        self.preview = None

    def on_comfy_event(self, kind: str, data: dict[str, Any]) -> None:
        """Follow ComfyUI's events for this job's prompt (the tracker calls this)."""
        if kind == "execution_start":
            self.status = "running"
            self.emit("running", {"id": self.id})
        elif kind == "executing" and data.get("node") is not None:
            node = str(data["node"])
            self.progress = {"value": 0, "max": 0, "node": node}
            self.emit("executing", {"id": self.id, "node": node, "node_name": self.name_of(node)})
        elif kind == "progress":
            self.progress = {
                "value": data.get("value", 0),
                "max": data.get("max", 0),
                "node": data.get("node"),
            }
            node_name = self.name_of(self.progress["node"])
            self.emit("progress", {"id": self.id, **self.progress, "node_name": node_name})

    def name_of(self, node: Any) -> str | None:
        """A node of the job's graph as people call it (node_names), or None."""
        return self.node_names.get(str(node)) if node is not None else None

    def end(self, outcome: JobOutcome) -> None:
        """The job ended as its outcome says: `complete` with the 200 body, or `failed` with
        the error's body (status `interrupted` for an interrupt)."""
        self.outcome, self.finished_at = outcome, time.monotonic()
        self._result_bytes = sum(f.size for f in outcome.files if not f.stored)
        self._end_previews()
        if outcome.error is None:
            self.status, self.result = "succeeded", outcome.body()
            self.emit("complete", self.result)
            return
        self.status = "interrupted" if isinstance(outcome.error, Interrupted) else "failed"
        self.error = outcome.error.body()
        self.emit("failed", {"id": self.id, **self.error})

    async def follow(
        self, after: int = 0, *, idle_s: float | None = None
    ) -> AsyncIterator[JobEvent | None]:
        """Yield the events with ids above `after`, then each new one, until the last.

        Between them, a `preview` event whenever a newer preview was published: only the newest,
        however late the reader comes or slowly it reads. With idle_s, yield None whenever that
        long passes without an event.
        """
        sent, previews_seen = after, 0
        while True:
            changed = self._changed
            for event in self.events[sent:]:
                yield event
                sent = event.id
                if event.type in TERMINAL:
                    return
            if self.finished:
                return  # the caller has every event already (`after` at or past the last)
            if self.preview is not None and self.previews_published > previews_seen:
                previews_seen = self.previews_published
                yield JobEvent(sent, "preview", self.preview.event_data())
                continue  # events may have come meanwhile
            try:
                await asyncio.wait_for(changed.wait(), idle_s)
            except TimeoutError:
                yield None
