"""Signals: one Redis subscription per gateway to the fleet's channels.

`changed` carries the key of a job that has a new event, `ended` the key of one whose outcome
was just recorded (the store's scripts publish both): they wake whoever on this gateway follows
that job, an SSE stream on any change, a waiting request only at the end. `cancel` carries the
key of a job to interrupt, for the gateway that runs it. Followers also read again on their own
every POLL_S, so a message lost while Redis was away delays them, never strands them.

`queued` says a job waits in line for a gateway with room (one the gateway that accepted it did
not take at once, or one handed back): the worker (app.fleet.worker) pulls when it hears it,
and otherwise looks on its own every so often, so an idle fleet costs no read per job.

`preview` carries a running job's newest latent preview (app.jobs.preview), already throttled
by the gateway that runs it: previews never go into Redis streams. A gateway keeps the newest
one of each job that someone here watches (an SSE stream, or a request waiting for the job's end,
whose /sdapi/v1/progress shows it), and forgets it when the last one leaves.

A job this gateway ran is handed to its followers here as it is (`recording`) as it ends,
before its outcome is written to Redis: a request waiting for it on this gateway answers without
waiting for Redis, a read of Redis or a fetch of its files from the shelf. Until Redis has the
outcome, this gateway's own reads and writes of that API key's jobs wait for it (`recorded`).
Followers on other gateways read the outcome back from Redis.

A subscription waits for messages without a deadline of its own, so a quiet one is PINGed every
PING_S: one that gets no answer within QUEUE_TIMEOUT_S (a partition, a paused VM) is given up
and made again, and Redis counts as out of reach meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from redis.exceptions import RedisError

from app.core.outcome import JobOutcome
from app.jobs.preview import Preview

log = logging.getLogger(__name__)
RETRY_S = 1.0  # between attempts to subscribe again
POLL_S = 5.0  # the longest a follower waits before reading again without being told
PING_S = 2.0  # how long a subscription may be quiet before it is asked whether it still works


class Signals:
    """Wakes this gateway's followers of a job when it changes; passes on interrupts."""

    def __init__(self, redis: Any, name: str, reachability: Any) -> None:
        self.redis = redis
        self.timeout_s: float = reachability.timeout_s  # QUEUE_TIMEOUT_S
        self.changed_channel = f"{name}:changed"
        self.ended_channel = f"{name}:ended"
        self.cancel_channel = f"{name}:cancel"
        self.preview_channel = f"{name}:preview"
        self.queued_channel = f"{name}:queued"
        # Set when a job may wait in line: one was queued, or messages may have been missed.
        self.queued = asyncio.Event()
        self.reachability = reachability  # app.fleet.reachability.Reachability
        self.on_cancel: Callable[[str], Awaitable[None]] | None = None
        # key -> the events of its followers, each with whether it waits for the end only
        self._watchers: dict[str, dict[asyncio.Event, bool]] = {}
        # key -> (how many it has heard, the job generation, its newest preview), watched only
        self._previews: dict[str, tuple[int, str, Preview]] = {}
        # key -> (the job generation, its outcome) of a job run here, watched only
        self._settled: dict[str, tuple[str, JobOutcome]] = {}
        # key -> the end of the recording of a job's outcome that this gateway makes now
        self._recording: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None
        self.subscribed = False  # and answering, as of the last message or PING

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="fleet-signals")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.contextmanager
    def watch(self, key: str, *, ends_only: bool = False) -> Iterator[asyncio.Event]:
        """An event set whenever the job changes (or, with ends_only, when it ends); clear it
        before each read."""
        event = asyncio.Event()
        self._watchers.setdefault(key, {})[event] = ends_only
        try:
            yield event
        finally:
            watchers = self._watchers.get(key)
            if watchers is not None:
                watchers.pop(event, None)
                if not watchers:
                    del self._watchers[key]
                    self._previews.pop(key, None)
                    self._settled.pop(key, None)

    def preview(self, key: str, generation: str | None) -> tuple[int, Preview | None]:
        """How many previews of the job this gateway has heard while watched, and the newest."""
        count, of, preview = self._previews.get(key, (0, "", None))
        return (count, preview) if of == generation else (0, None)

    @contextlib.contextmanager
    def recording(
        self, key: str, generation: str, outcome: JobOutcome
    ) -> Iterator[Callable[[], Awaitable[None]]]:
        """While this gateway records the outcome of a job it ran: what to await first, for the
        job's followers here that wait for the end to take it as it is (settled) and answer;
        those it did not settle are woken at the end, to read it from Redis."""

        async def settle() -> None:
            if key in self._watchers:
                self._settled[key] = (generation, outcome)
                self.wake(key)
                # The follower's turn, then its request's, which writes the answer: before the
                # outcome's own write to Redis, which would delay it by a send.
                for _ in range(2):
                    await asyncio.sleep(0)

        done = asyncio.Event()
        self._recording[key] = done
        try:
            yield settle
        finally:
            done.set()
            if self._recording.get(key) is done:
                del self._recording[key]
            self.wake(key)

    async def recorded(self, of: Callable[[str], bool], timeout_s: float) -> None:
        """Until the outcomes this gateway is recording of the jobs whose key `of` picks are
        in Redis, at most timeout_s (Redis away: what reads it fails on its own)."""
        ends = [done for key, done in self._recording.items() if of(key)]
        if not ends:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                for done in ends:
                    await done.wait()

    def settled(self, key: str, generation: str | None) -> JobOutcome | None:
        """The outcome of this generation of the job, when it ran here and is watched."""
        generation_and_outcome = self._settled.get(key)
        if generation_and_outcome is None or generation_and_outcome[0] != generation:
            return None
        return generation_and_outcome[1]

    async def publish_preview(self, key: str, generation: str, preview: Preview) -> None:
        """Send a job's preview to every gateway; one that does not arrive is not missed long."""
        message = {
            "key": key, "g": generation, "image": base64.b64encode(preview.image).decode(),
            "media_type": preview.media_type, "node": preview.node,
            "node_name": preview.node_name, "step": preview.step, "max": preview.max,
            "at": preview.at,
        }  # fmt: skip
        await self.redis.publish(self.preview_channel, json.dumps(message))

    def wake(self, key: str | None = None, *, ended: bool = True) -> None:
        """Wake the followers here of a job (None: of every job); those that wait for the end
        only when `ended`."""
        groups = self._watchers.values() if key is None else [self._watchers.get(key, {})]
        for watchers in groups:
            for event, ends_only in watchers.items():
                if ended or not ends_only:
                    event.set()

    async def _listen(self) -> None:
        channels = (
            self.changed_channel, self.ended_channel, self.cancel_channel, self.preview_channel,
            self.queued_channel,
        )  # fmt: skip
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    async with asyncio.timeout(self.timeout_s):
                        await pubsub.subscribe(*channels)
                    self.wake()  # messages may have been missed while not subscribed
                    self.queued.set()
                    await self._receive(pubsub)
            except (RedisError, OSError, TimeoutError) as e:
                # A subscription that worked and dropped is made again at once; one that never
                # answered is news.
                if not self.subscribed:
                    self.reachability.failed(e)
                    await asyncio.sleep(RETRY_S)
                self.subscribed = False

    async def _receive(self, pubsub: Any) -> None:
        """Pass on messages until the subscription fails, or a PING goes unanswered."""
        heard = time.monotonic()
        pinged: float | None = None
        while True:
            message = await pubsub.get_message(timeout=min(PING_S, self.timeout_s) / 2)
            now = time.monotonic()
            if message is not None:
                heard, pinged, self.subscribed = now, None, True
                if message.get("type") == "message":
                    await self._dispatch(message["channel"], str(message["data"]))
            elif pinged is not None and now - pinged > self.timeout_s:
                raise TimeoutError("the subscription got no answer to a PING")
            elif pinged is None and now - heard >= PING_S:
                async with asyncio.timeout(self.timeout_s):
                    await pubsub.ping()
                pinged = now

    async def _dispatch(self, channel: str, key: str) -> None:
        if channel == self.queued_channel:
            self.queued.set()
        elif channel == self.changed_channel:
            self.wake(key, ended=False)
        elif channel == self.ended_channel:
            self.wake(key)
        elif channel == self.preview_channel:
            self._keep_preview(key)
        elif self.on_cancel is not None:
            try:
                await self.on_cancel(key)
            except Exception:  # a bug there must not end the subscription
                log.exception("fleet: interrupting job %s failed", key)

    def _keep_preview(self, message: str) -> None:
        try:
            m = json.loads(message)
            key = str(m["key"])
            preview = Preview(
                base64.b64decode(m["image"]), str(m["media_type"]), m["node"], m["node_name"],
                int(m["step"]), int(m["max"]), float(m["at"]),
            )  # fmt: skip
        except (ValueError, KeyError, TypeError):
            log.warning("fleet: ignored a malformed preview message")
            return
        if key in self._watchers:  # kept only for a follower here
            count = self._previews.get(key, (0, "", None))[0]
            self._previews[key] = (count + 1, str(m.get("g")), preview)
            self.wake(key, ended=False)


async def wait(event: asyncio.Event, timeout_s: float) -> None:
    """Until the event is set, at most timeout_s (a deadline on this task: wait_for would
    start another task for every wait)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
