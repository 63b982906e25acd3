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


class EventSink:
    """Copies one job's events into Redis in order, retrying while Redis is away; only the
    gateway that started the job's current generation has them added (app.fleet.scripts)."""

    def __init__(self, store: FleetStore, pulled: Pulled, consumer: str) -> None:
        self.store = store
        self.pulled = pulled
        self.consumer = consumer
        self.pending: asyncio.Queue[tuple[JobEvent, str, Any] | None] = asyncio.Queue()
        self.writer = asyncio.create_task(self._write(), name=f"fleet-events-{pulled.key}")
        self._preview: Preview | None = None  # the newest not yet sent; one at most
        self._sending: asyncio.Task[None] | None = None

    def offer(self, event: JobEvent, record: JobRecord) -> None:
        # `queued` was written when the job was accepted; the end is written with the outcome.
        if event.type != "queued" and event.type not in TERMINAL:
            self.pending.put_nowait((event, record.status, dict(record.progress)))

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

    async def _write(self) -> None:
        closing = False
        while not closing:
            batch = [await self.pending.get()]
            while not self.pending.empty():  # whatever piled up goes in one round trip
                batch.append(self.pending.get_nowait())
            closing = None in batch
            events = [item for item in batch if item is not None]
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

    async def close(self) -> None:
        """Write what is pending, then stop."""
        self.pending.put_nowait(None)
        await self.writer

    def abort(self) -> None:
        """Stop at once, dropping what is pending (the job never ran)."""
        self.writer.cancel()
        if self._sending is not None:
            self._sending.cancel()
