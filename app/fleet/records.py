"""RemoteRecord: a job of the fleet as Redis knows it, read by any gateway.

It answers what a local JobRecord answers (status, progress, result or error, its events), so
GET /prompt/{id}, its SSE stream and POST /interrupt work on every gateway, whichever one runs
the job.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from app.core.outcome import JobOutcome
from app.core.status import FINISHED, ended_status
from app.fleet.results import from_redis
from app.fleet.signals import POLL_S, wait
from app.fleet.store import FleetStore, split_key
from app.jobs.preview import Preview
from app.jobs.records import TERMINAL, JobEvent


class RemoteRecord:
    """A snapshot of a fleet job's state, and a way to follow its events live."""

    def __init__(self, store: FleetStore, key: str, state: dict[str, str], events: int) -> None:
        spec = json.loads(state.get("spec") or "{}")
        self.store = store
        self.key = key
        owner, request_id = split_key(key)
        self.id: str = spec.get("id", request_id)
        # The id of the API key that made it (app.core.keys), as JobRecord.owner; None: no keys.
        self.owner: str | None = spec.get("owner", owner)
        self.workflow: str = spec.get("workflow", "prompt")
        self.prompt_id = ""
        self.status: str = state.get("status", "queued")
        self.progress: dict[str, Any] = json.loads(state.get("progress") or "{}") or {
            "value": 0, "max": 0, "node": None,
        }  # fmt: skip
        error = json.loads(state["error"]) if "error" in state else None
        # The HTTP status an error answered with where the job ran: not part of the body.
        self.error_status: int = int(error.pop("status", 500)) if error else 500
        self.error: dict[str, Any] | None = error
        self.stored: dict[str, Any] | None = None  # its result as Redis holds it (metadata)
        self._outcome: JobOutcome | None = None
        self.instance: int | None = None  # an index on another gateway would mislead
        self.gateway: str | None = state.get("gateway")
        self.generation: str | None = state.get("msg")  # the job of this id it is (its message)
        self.last_event_id = events

    @classmethod
    def queued(
        cls,
        store: FleetStore,
        key: str,
        request_id: str,
        workflow: str,
        owner: str | None,
        generation: str,
    ) -> RemoteRecord:
        """The record of a job just accepted, without reading it back."""
        record = cls(store, key, {"status": "queued", "msg": generation}, 1)
        record.id, record.workflow, record.owner = request_id, workflow, owner
        return record

    @classmethod
    async def load(cls, store: FleetStore, key: str) -> RemoteRecord | None:
        """The job's record, or None when Redis knows no such job (or no longer)."""
        state = await store.state(key)
        if not state:
            return None
        events = await store.redis.xlen(store.events_key(key))
        record = cls(store, key, state, int(events))
        if record.status == "succeeded":
            last = await store.redis.xrevrange(store.events_key(key), count=1)
            if last:
                record.stored = json.loads(last[0][1].get("data") or "null")
        return record

    def _ended(self, event: JobEvent) -> None:
        """Take the outcome in, so the snapshot answers as the job ended."""
        if event.type == "complete":
            self.status, self.stored = "succeeded", event.data
        else:
            self.error = {k: v for k, v in event.data.items() if k != "id"}
            self.status = ended_status(self.error)

    @property
    def outcome(self) -> JobOutcome | None:
        """A succeeded job's outcome, read from its result: its files fetched, as they go out,
        from the gateway that ran it."""
        if self._outcome is None and self.stored is not None:
            self._outcome = from_redis(self.stored, self.store.shelf)
        return self._outcome

    @property
    def result(self) -> dict[str, Any] | None:
        """A succeeded job's /prompt body, each of its images a ResultFile (as JobRecord's)."""
        outcome = self.outcome
        return outcome.body() if outcome is not None else None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def preview(self) -> Preview | None:
        """The job's newest preview, while someone on this gateway watches the job (a follower,
        or the request that waits for it), else None (app.fleet.signals)."""
        return self.store.signals.preview(self.key, self.generation or "")[1]

    async def follow(
        self, after: int = 0, *, idle_s: float | None = None
    ) -> AsyncIterator[JobEvent | None]:
        """Yield the events numbered above `after`, then each new one, until the last; with
        idle_s, yield None whenever that long passes without one. Between them, the newest
        preview whenever this gateway hears of a newer one (as JobRecord.follow)."""
        stream_id = "0-0"
        last_id, previews_seen = after, 0
        quiet_since = time.monotonic()
        with self.store.signals.watch(self.key) as changed:
            while True:
                changed.clear()  # before reading: a change from here on is not missed
                backlog = await self.store.events(self.key, stream_id)
                for entry_id, fields in backlog:
                    stream_id = entry_id  # the next read starts after it
                    if fields.get("g", self.generation) != self.generation:
                        return  # a later job of its id replaced it: this one's stream ended
                    event = JobEvent(int(fields["n"]), fields["type"], json.loads(fields["data"]))
                    if event.id <= after:
                        continue
                    quiet_since, last_id = time.monotonic(), event.id
                    if event.type in TERMINAL:
                        self._ended(event)
                        if (body := self.result) is not None:  # files, not their metadata
                            event = JobEvent(event.id, event.type, body)
                        yield event
                        return
                    yield event
                if backlog:
                    continue
                heard, preview = self.store.signals.preview(self.key, self.generation or "")
                if preview is not None and heard > previews_seen:
                    previews_seen = heard
                    yield JobEvent(last_id, "preview", preview.event_data())
                    continue
                if not await self.store.state(self.key):
                    return  # it expired
                quiet_s = time.monotonic() - quiet_since
                if idle_s is not None and quiet_s >= idle_s:
                    yield None
                    quiet_since = time.monotonic()
                    continue
                left_s = POLL_S if idle_s is None else min(POLL_S, idle_s - quiet_s)
                await wait(changed, left_s)
