"""JobWrites: what the gateway that runs a fleet job writes of it, its events and its outcome
(a mixin of app.fleet.store's FleetStore; taking its message: app.fleet.stream)."""

from __future__ import annotations

import json
import time
from typing import Any

from redis.exceptions import NoScriptError

from app.fleet import scripts
from app.fleet.signals import Signals
from app.fleet.stream import GROUP, Pulled
from app.jobs.records import TERMINAL, JobEvent


class JobWrites:
    """Appending a running job's events, recording its outcome once (FleetStore provides the
    rest)."""

    redis: Any
    stream: str
    signals: Signals
    ttl_s: int
    bounds: list[str]
    history: list[str]
    _append: Any
    _finish: Any

    def job_key(self, key: str) -> str:
        raise NotImplementedError

    def events_key(self, key: str) -> str:
        raise NotImplementedError

    def _owner_keys(self, key: str) -> tuple[list[str], str]:
        raise NotImplementedError

    async def append_all(
        self, pulled: Pulled, consumer: str, events: list[tuple[JobEvent, str, Any]]
    ) -> None:
        """Add events (with the status and progress after each) in order, in one round trip;
        only while this gateway runs the job's current generation and it has not ended."""
        keys, calls = self._append_calls(pulled, consumer, events)
        if len(calls) == 1:
            await self._append(keys=keys, args=calls[0])
            return
        try:
            await self._append_pipelined(keys, calls)
        except NoScriptError:  # a restarted Redis forgot the script: load it, go again
            await self.redis.script_load(scripts.APPEND)
            await self._append_pipelined(keys, calls)

    def _append_calls(
        self, pulled: Pulled, consumer: str, events: list[tuple[JobEvent, str, Any]]
    ) -> tuple[list[str], list[list[str]]]:
        """The keys and the arguments of each event's APPEND."""
        key = pulled.key
        calls = [
            [event.type, packed(event.data), status, packed(progress) if progress else "",
             self.signals.changed_channel, key, pulled.message_id, consumer]
            for event, status, progress in events
        ]  # fmt: skip
        return [self.job_key(key), self.events_key(key)], calls

    async def _append_pipelined(self, keys: list[str], calls: list[list[str]]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for args in calls:
                pipe.evalsha(self._append.sha, len(keys), *keys, *args)
            await pipe.execute()

    async def finish(
        self,
        pulled: Pulled,
        status: str,
        event_type: str,
        data: dict[str, Any],
        error: dict[str, Any] | None = None,
        *,
        events: list[tuple[JobEvent, str, Any]] | None = None,
        consumer: str = "",
        ack: bool = False,
    ) -> bool:
        """Record the outcome of the message's job, once: True for the caller that recorded it
        (again when it asks again); False when another did, or another generation of the id is
        current. Its events not stored yet (the consumer's, app.fleet.sink) go first, in the
        same script; with ack (the job has no webhooks to wait for), its message is acknowledged
        in it too."""
        assert event_type in TERMINAL
        keys = [*self._end_keys(pulled.key), self.stream]
        args = [*self._end_args(pulled.key, status, event_type, data, error, pulled.message_id),
                GROUP if ack else "", consumer]  # fmt: skip
        for event, _, progress in events or ():
            args += [event.type, packed(event.data), packed(progress) if progress else ""]
        return bool(await self._finish(keys=keys, args=args))

    def _end_keys(self, key: str) -> list[str]:
        owned, _ = self._owner_keys(key)
        return [self.job_key(key), self.events_key(key), *owned, *self.history]

    def _end_args(
        self,
        key: str,
        status: str,
        event_type: str,
        data: dict[str, Any],
        error: dict[str, Any] | None,
        generation: str,
    ) -> list[str]:
        shown = packed(error) if error is not None else ""
        return [status, event_type, packed(data), shown, str(self.ttl_s), f"{time.time():.3f}",
                self.signals.ended_channel, key, self._owner_keys(key)[1], generation,
                *self.bounds, self.job_key(""), self.events_key("")]  # fmt: skip


def packed(value: Any) -> str:
    """JSON as the fleet's Redis holds it: no spaces."""
    return json.dumps(value, separators=(",", ":"))
