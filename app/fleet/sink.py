"""EventSink: copies one fleet job's events into Redis as the job runs on this gateway, and
sends its previews over pub/sub (app.fleet.signals), never into the stream."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.exceptions import RedisError

from app.fleet.store import FleetStore
from app.fleet.stream import Pulled
from app.jobs.preview import Preview
from app.jobs.records import TERMINAL, JobEvent, JobRecord

log = logging.getLogger(__name__)
RETRY_S = 1.0  # between attempts to reach Redis
LINGER_S = 0.025  # how long an event waits for the next ones before it is written


class EventSink:
    """Copies one job's events into Redis in order, retrying while Redis is away; only the
    gateway that started the job's current generation has them added (app.fleet.scripts).

    Events linger up to LINGER_S before they are written, so the events of a moment go in one
    round trip, and a short job's go with its outcome (close() hands over what is left): then it
    costs no task and no write of its own."""

    def __init__(self, store: FleetStore, pulled: Pulled, consumer: str) -> None:
        self.store = store
        self.pulled = pulled
        self.consumer = consumer
        self._buffer: list[tuple[JobEvent, str, Any]] = []
        self._closed = False
        self._due: asyncio.TimerHandle | None = None  # the next write, once events linger
        self._writing: asyncio.Task[None] | None = None  # a write under way
        self._preview: Preview | None = None  # the newest not yet sent; one at most
        self._sending: asyncio.Task[None] | None = None

    def offer(self, event: JobEvent, record: JobRecord) -> None:
        # `queued` was written when the job was accepted; the end is written with the outcome.
        if event.type != "queued" and event.type not in TERMINAL:
            self._buffer.append((event, record.status, dict(record.progress)))
            if self._due is None and self._writing is None and not self._closed:
                self._due = asyncio.get_running_loop().call_later(LINGER_S, self._write_due)

    def offer_preview(self, preview: Preview, record: JobRecord) -> None:
        """Send a published preview; one that comes while Redis is slow replaces the unsent."""
        self._preview = preview
        if self._sending is None or self._sending.done():
            self._sending = asyncio.create_task(self._send_previews())

    async def _send_previews(self) -> None:
        while (preview := self._preview) is not None:
            self._preview = None
            try:
                await self.store.signals.publish_preview(
                    self.pulled.key, self.pulled.message_id, preview
                )
            except (RedisError, OSError) as e:  # a preview is not worth a retry
                log.debug("fleet: job %s: a preview was not sent: %r", self.pulled.key, e)

    def _write_due(self) -> None:
        self._due = None
        if self._buffer and not self._closed:
            self._writing = asyncio.create_task(
                self._write(), name=f"fleet-events-{self.pulled.key}"
            )

    async def _write(self) -> None:
        events, self._buffer = self._buffer, []
        while events:
            try:
                await self.store.append_all(self.pulled, self.consumer, events)
                break
            except (RedisError, OSError) as e:
                self.store.reachability.failed(e)
                await asyncio.sleep(RETRY_S)
            except Exception:  # a bug loses these events, never the job's outcome
                log.exception("fleet: job %s: events could not be stored", self.pulled.key)
                break
        self._writing = None
        if self._buffer and not self._closed:  # those of the next moments linger in turn
            self._due = asyncio.get_running_loop().call_later(LINGER_S, self._write_due)

    async def close(self) -> list[tuple[JobEvent, str, Any]]:
        """Stop (after a write under way), and hand over the events not written yet, for the
        outcome's own round trip (FleetStore.finish)."""
        self._closed = True
        if self._due is not None:
            self._due.cancel()
        if self._writing is not None:
            await asyncio.shield(self._writing)
        events, self._buffer = self._buffer, []
        return events

    def abort(self) -> None:
        """Stop at once, dropping what is pending (the job never ran)."""
        self._closed = True
        for pending in (self._due, self._writing, self._sending):
            if pending is not None:
                pending.cancel()
