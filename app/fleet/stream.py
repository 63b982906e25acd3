"""JobStream: the fleet's queue as messages, `<name>:jobs` read by the consumer group
`gateways` (part of app.fleet.store's FleetStore).

A gateway pulls a message when one of its ComfyUIs is free (the job that waited with the lowest
rank, claimed from the consumer `~queued`: app.fleet.order), holds it (pending) while it starts and
runs the job, heartbeats it, and acknowledges it once the job's webhooks went out; a message a
gateway stopped heartbeating is taken over by another. A message's id is its job's generation:
only the message the record names may start the job, and only the gateway holding it may.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ResponseError

from app.fleet.signals import Signals

GROUP = "gateways"
NOT_HELD, NOTHING_TO_START = 0, -1  # what START answers instead of a start's number


@dataclass(frozen=True)
class Pulled:
    """A job message this gateway took from the stream; its id is the job's generation."""

    message_id: str
    key: str
    reclaimed: bool = False  # taken over from a gateway that stopped heartbeating
    # The job's hash as the pull read it, in the same script (None: to be read)
    state: dict[str, str] | None = field(default=None, compare=False, repr=False)
    started: int = 0  # which start of the job the pull made, in the same script (0: none)
    # The job as accepted, when this gateway accepted it and took it at once (not read back)
    spec: dict[str, Any] | None = field(default=None, compare=False, repr=False)


class JobStream:
    """Taking, keeping and letting go of job messages (a mixin: FleetStore provides the rest)."""

    redis: Any
    stream: str
    _ack: Any
    _release: Any
    _start: Any
    _heartbeat: Any
    _pull: Any
    _reclaim: Any
    waiting: str
    age_step_s: float
    signals: Signals

    def job_key(self, key: str) -> str:
        raise NotImplementedError

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def pull(self, consumer: str, max_attempts: int = 0) -> Pulled | None:
        """The waiting job that goes next, else None (none waits: the worker hears of the next
        one queued on the `queued` channel, app.fleet.signals). With max_attempts, a job
        started fewer times than that (and not ended) is started here in the same script, as
        start() would (`Pulled.started`)."""
        try:
            taken = await self._take(consumer, max_attempts)
        except ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            await self.ensure_group()  # Redis restarted without its data
            return None
        message_id, found, *read = taken
        if not message_id:
            return None
        if not read:  # a message queued by a gateway of an earlier version
            return Pulled(message_id, found)
        return Pulled(message_id, found, state=hash_of(read[0]), started=int(read[1]))

    async def _take(self, consumer: str, max_attempts: int) -> list[Any]:
        args = [GROUP, consumer, self.job_key(""), str(max_attempts)]
        taken: list[Any] = await self._pull(keys=[self.waiting, self.stream], args=args)
        return [str(taken[0]), str(taken[1]), *taken[2:]]

    async def reclaim(self, consumer: str, idle_ms: int) -> Pulled | None:
        """A job whose gateway stopped heartbeating for idle_ms, taken over; None if none."""
        try:
            claimed = await self._reclaim(keys=[self.stream], args=[GROUP, consumer, idle_ms])
        except ResponseError as e:
            if "NOGROUP" not in str(e) and "no such key" not in str(e):
                raise
            return None
        if not claimed:
            return None
        return Pulled(str(claimed[0]), str(claimed[1]), reclaimed=True)

    async def position(self, key: str) -> int | None:
        """Jobs that run before this one, which no gateway has taken yet; None once taken."""
        ahead = await self.redis.zrank(self.waiting, key)
        return None if ahead is None else int(ahead)

    async def queued(self, limit: int) -> list[tuple[str, int, float]]:
        """The first `limit` jobs no gateway has taken, in the order they will be: (key,
        priority, when it was queued)."""
        keys = await self.redis.zrange(self.waiting, 0, max(limit, 1) - 1)
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(self.job_key(key), "priority", "created")
            found = await pipe.execute()
        return [
            (key, int(priority or 0), float(created or 0))
            for key, (priority, created) in zip(keys, found, strict=True)
        ]

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
        """Hand a job this gateway holds and will not run back to the queue (at its place, as a
        new generation), for another; False when it had ended, or was not this gateway's."""
        keys = [self.stream, self.job_key(pulled.key), self.waiting]
        args = [GROUP, pulled.message_id, pulled.key, consumer, repr(self.age_step_s),
                self.signals.queued_channel]  # fmt: skip
        return bool(await self._release(keys=keys, args=args))

    async def start(self, pulled: Pulled, consumer: str) -> int:
        """Note that this gateway starts the job of a message it holds: which start it is (1:
        the first); NOT_HELD when another gateway holds the message now, NOTHING_TO_START when
        the job ended or the message is of an earlier generation (only to be acknowledged)."""
        keys = [self.job_key(pulled.key), self.stream]
        return int(await self._start(keys=keys, args=[GROUP, consumer, pulled.message_id]))


def hash_of(flat: list[str]) -> dict[str, str]:
    """HGETALL's reply as a script returns it (field, value, field, value...) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))
