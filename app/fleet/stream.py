"""JobStream: the fleet's queue as messages, `<name>:jobs` read by the consumer group
`gateways` (part of app.fleet.store's FleetStore).

A gateway pulls a message when one of its ComfyUIs is free, holds it (pending) while it starts and
runs the job, heartbeats it, and acknowledges it once the job's webhooks went out; a message a
gateway stopped heartbeating is taken over by another. A message's id is its job's generation:
only the message the record names may start the job, and only the gateway holding it may.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

GROUP = "gateways"
NOT_HELD, NOTHING_TO_START = 0, -1  # what START answers instead of a start's number


@dataclass(frozen=True)
class Pulled:
    """A job message this gateway took from the stream; its id is the job's generation."""

    message_id: str
    key: str
    reclaimed: bool = False  # taken over from a gateway that stopped heartbeating


class JobStream:
    """Taking, keeping and letting go of job messages (a mixin: FleetStore provides the rest)."""

    redis: Any
    stream: str
    timeout_s: float
    _ack: Any
    _release: Any
    _start: Any
    _heartbeat: Any

    def job_key(self, key: str) -> str:
        raise NotImplementedError

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def pull(self, consumer: str, block_ms: int) -> Pulled | None:
        """The next job no gateway has taken, waiting up to block_ms (at most half the call's
        deadline, so a blocked read is never taken for a Redis that stopped); None if none."""
        block_ms = max(min(block_ms, int(self.timeout_s * 500)), 1)
        try:
            answer = await self.redis.xreadgroup(
                GROUP, consumer, {self.stream: ">"}, count=1, block=block_ms
            )
        except ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            await self.ensure_group()  # Redis restarted without its data
            return None
        if not answer or not answer[0][1]:
            return None
        message_id, fields = answer[0][1][0]
        return Pulled(message_id, fields.get("key", ""))

    async def reclaim(self, consumer: str, idle_ms: int) -> Pulled | None:
        """A job whose gateway stopped heartbeating for idle_ms, taken over; None if none."""
        _, claimed, _ = await self.redis.xautoclaim(
            self.stream, GROUP, consumer, min_idle_time=idle_ms, count=1
        )
        if not claimed:
            return None
        message_id, fields = claimed[0]
        return Pulled(message_id, (fields or {}).get("key", ""), reclaimed=True)

    async def heartbeat(self, consumer: str, message_ids: list[str]) -> list[str]:
        """Still working on these: reset their idle time, so nobody takes them over. Those
        another gateway took over meanwhile (this one went quiet too long) are returned."""
        if not message_ids:
            return []
        lost = await self._heartbeat(keys=[self.stream], args=[GROUP, consumer, *message_ids])
        return [str(message_id) for message_id in lost]

    async def ack(self, pulled: Pulled) -> None:
        """Done with the message: its job's outcome is recorded and its webhooks went out."""
        await self._ack(
            keys=[self.stream, self.job_key(pulled.key)], args=[GROUP, pulled.message_id]
        )

    async def release(self, pulled: Pulled, consumer: str) -> bool:
        """Hand a job this gateway holds and will not run back to the queue (at its end, as a
        new generation), for another; False when it had ended, or was not this gateway's."""
        keys = [self.stream, self.job_key(pulled.key)]
        args = [GROUP, pulled.message_id, pulled.key, consumer]
        return bool(await self._release(keys=keys, args=args))

    async def start(self, pulled: Pulled, consumer: str) -> int:
        """Note that this gateway starts the job of a message it holds: which start it is (1:
        the first); NOT_HELD when another gateway holds the message now, NOTHING_TO_START when
        the job ended or the message is of an earlier generation (only to be acknowledged)."""
        keys = [self.job_key(pulled.key), self.stream]
        return int(await self._start(keys=keys, args=[GROUP, consumer, pulled.message_id]))
