"""Outcomes: how a job this gateway took from the fleet ends. Its outcome is recorded in Redis
once, for its generation, and only the gateway that recorded it delivers its webhooks; then its
message is acknowledged. While Redis is away an outcome (and an acknowledgement) waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.exceptions import RedisError

from app.core.errors import GatewayError, OutputsUnavailable, error_from_body
from app.core.outcome import JobOutcome
from app.core.status import ended_status
from app.fleet.records import RemoteRecord
from app.fleet.results import check_available, to_redis
from app.fleet.spec import deliver_ending, spec_of
from app.fleet.store import FleetStore, split_key
from app.fleet.stream import Pulled
from app.jobs.records import JobEvent
from app.jobs.webhooks import WebhookSender

log = logging.getLogger(__name__)
RETRY_S = 1.0  # between attempts to reach Redis


def internal_error(what: str) -> GatewayError:
    return GatewayError(f"internal error while {what} the job; see the gateway's log")


class Outcomes:
    """Records outcomes and acknowledges messages for the worker (app.fleet.worker)."""

    def __init__(self, store: FleetStore, sender: WebhookSender, consumer: str) -> None:
        self.store = store
        self.sender = sender
        self.consumer = consumer  # this gateway's, recording the outcomes
        self.abandoning = False  # shutting down past the grace period: leave jobs to others
        self.closed = False  # the worker stopped: nothing waits for Redis any more

    async def record(
        self,
        pulled: Pulled,
        outcome: JobOutcome,
        events: list[tuple[JobEvent, str, Any]] | None = None,
        ack: bool = False,
    ) -> bool:
        """Record the outcome of the message's job (after its events not stored yet): True for
        the gateway that recorded it (it delivers the webhooks); with ack, its message
        acknowledged with it. Redis may be away for a while: the outcome waits."""
        while True:
            try:
                if (error := outcome.error) is None:
                    data = to_redis(outcome, self.store.shelf)
                    return await self.store.finish(
                        pulled, "succeeded", "complete", data,
                        events=events, consumer=self.consumer, ack=ack,
                    )  # fmt: skip
                body = error.body()
                status = ended_status(body)
                data, shown = {"id": outcome.id, **body}, {**body, "status": error.status}
                return await self.store.finish(
                    pulled, status, "failed", data, shown,
                    events=events, consumer=self.consumer, ack=ack,
                )  # fmt: skip
            except (RedisError, OSError) as e:
                if self.abandoning or self.closed:
                    return False
                self.store.reachability.failed(e)
                await asyncio.sleep(RETRY_S)

    async def ack(self, pulled: Pulled) -> None:
        """Done with the message (waiting for Redis if it is away, until the worker stops: a
        message never acknowledged is taken over, and its webhooks sent again)."""
        while True:
            try:
                await self.store.ack(pulled)
                return
            except (RedisError, OSError) as e:
                if self.closed:
                    return
                self.store.reachability.failed(e)
                await asyncio.sleep(RETRY_S)

    async def end_unstarted(
        self, pulled: Pulled, spec: dict[str, Any], error: GatewayError
    ) -> None:
        """A job that never ran here ends with this error; its webhooks learn it, once."""
        log.warning("job %s failed: %s %s: %s", spec["id"], error.status, error.code, error.message)
        outcome = JobOutcome.failed(spec["id"], spec["graph"], error)
        if await self.record(pulled, outcome):
            await deliver_ending(self.sender, spec, outcome)
        await self.ack(pulled)

    async def fail_broken(self, pulled: Pulled, spec: dict[str, Any] | None, what: str) -> None:
        """A job this gateway could not carry through (a bug) ends failed, reported once: in
        Redis and, when its request can still be read, to its webhooks."""
        if spec is None:
            try:
                spec = spec_of(await self.store.state(pulled.key)) or None
            except Exception:  # its webhooks cannot be known; the failure is still recorded
                log.exception("fleet: job %s: its request cannot be read", pulled.key)
        request_id = spec["id"] if spec else split_key(pulled.key)[1]
        outcome = JobOutcome.failed(request_id, spec["graph"] if spec else {}, internal_error(what))
        if await self.record(pulled, outcome) and spec:
            await deliver_ending(self.sender, spec, outcome)
        await self.ack(pulled)

    async def redeliver(self, key: str, state: dict[str, str]) -> None:
        """Deliver the webhooks of a job whose outcome was recorded by a gateway that stopped
        before they went out: at least once, with the same webhook ids, for receivers to
        drop a repeat."""
        spec = spec_of(state)
        record = await RemoteRecord.load(self.store, key)
        if record is None:
            return
        log.warning("job %s: delivering the webhooks of a gateway that stopped", record.id)
        if record.error is not None:
            error = error_from_body(record.error_status, record.error)
            outcome = JobOutcome.failed(record.id, spec["graph"], error)
        else:
            assert record.outcome is not None  # a recorded end: its result or its error
            outcome = record.outcome
            try:  # its files lay with that gateway: gone with it, unless uploaded
                await check_available(outcome)
            except OutputsUnavailable as e:
                log.warning("job %s: %s", record.id, e.message)
                outcome = JobOutcome.failed(record.id, spec["graph"], e)
        await deliver_ending(self.sender, spec, outcome)
