"""PromptTracker: one websocket reader that settles each prompt's waiter from ComfyUI's events.

ComfyUI sends execution events only to the socket whose clientId submitted the prompt, so the
gateway submits every prompt with its own client_id and reads them all here. A waiter is
registered before its prompt is submitted, so no event can arrive before someone listens.
Settled by: `executing` with `node: null` (done; ComfyUI writes history before sending it),
`execution_error`, or `execution_interrupted`.

Events can be missed, and no request may hang on one that never comes. So the tracker asks
ComfyUI over HTTP (`ComfyClient.lookup`) where its pending prompts are, and settles the ones that
are finished or gone:
- after every (re)connect, for events sent while it was not listening;
- when ComfyUI's queue (its `status` events) holds fewer prompts than the gateway is waiting for:
  someone cleared the queue or deleted a prompt in ComfyUI itself, behind the gateway;
- when the stream has been silent for `silence_s` while prompts are pending. A websocket can stay
  open and stop delivering (SaladTechnologies/comfyui-api #186); if the check finds that ComfyUI
  made progress the stream did not report, the stream is dropped and reconnected.

Binary frames are latent previews (app.comfy.previews): each goes to its prompt's waiter, the
prompt it names or else the one executing on this instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect

from app.comfy.client import ComfyClient, PromptLookup
from app.comfy.events import (
    EventListener,
    LostError,
    Outputs,
    PromptWaiter,
    lost_by_comfyui,
    removed_behind_gateway,
)
from app.comfy.previews import FEATURE_FLAGS, decode
from app.core.errors import ComfyUnavailable, GatewayError

log = logging.getLogger(__name__)

QUEUE_SHRINK_CONFIRM_S = 0.5


class PromptTracker:
    """Reads ComfyUI's websocket, reconnecting with back-off, and settles prompt waiters."""

    def __init__(
        self,
        client: ComfyClient,
        client_id: str,
        *,
        max_backoff_s: float = 2.0,
        silence_s: float = 15.0,
    ) -> None:
        self.client = client
        self.client_id = client_id
        self.ws_url = client.base_url.replace("http", "ws", 1) + f"/ws?clientId={client_id}"
        self.max_backoff_s = max_backoff_s
        self.silence_s = silence_s
        self.waiters: dict[str, PromptWaiter] = {}
        self.queue_depth = 0
        self.connected = asyncio.Event()
        self.generation = 0  # bumped at each (re)connect
        self.listeners: list[EventListener] = []  # told of every event, e.g. system webhooks
        self.last_event_at = time.monotonic()
        self.executing: str | None = None  # the prompt ComfyUI runs now, as its events said
        self.reconnects_forced = 0  # silent streams dropped by the watchdog
        self._task: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._ws: ClientConnection | None = None
        self._checks: set[asyncio.Task[bool]] = set()
        self._shrink_timer: asyncio.TimerHandle | None = None

    # -- waiters ------------------------------------------------------------------------------
    def watch(self, prompt_id: str) -> PromptWaiter:
        """Register a waiter; call before submitting the prompt."""
        done: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
        waiter = PromptWaiter(prompt_id, self.generation, done)
        self.waiters[prompt_id] = waiter
        return waiter

    def submitted(self, waiter: PromptWaiter) -> None:
        """Mark a prompt as queued in ComfyUI; if the socket reconnected meanwhile, re-check it."""
        waiter.submitted = True
        if waiter.generation != self.generation:
            self._check_soon([waiter], lost_by_comfyui)

    def forget(self, prompt_id: str) -> None:
        self.waiters.pop(prompt_id, None)

    def settle(self, prompt_id: str, error: GatewayError | None = None) -> None:
        """Settle a waiter with its outputs so far, or with an error. Later calls are ignored."""
        waiter = self.waiters.get(prompt_id)
        if waiter is None or waiter.done.done():
            return
        if error is None:
            waiter.done.set_result(waiter.outputs)
        else:
            waiter.done.set_exception(error)

    def fail_all(self, error: GatewayError) -> None:
        for prompt_id in list(self.waiters):
            self.settle(prompt_id, error)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="prompt-tracker")
        self._watchdog = asyncio.create_task(self._watch_silence(), name="prompt-tracker-watchdog")

    async def wait_connected(self, timeout_s: float) -> None:
        await asyncio.wait_for(self.connected.wait(), timeout_s)

    async def close(self) -> None:
        if self._shrink_timer is not None:
            self._shrink_timer.cancel()
        for task in (self._task, self._watchdog, *self._checks):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.connected.clear()

    async def _run(self) -> None:
        backoff_s = 0.05
        while True:
            try:
                async with connect(
                    self.ws_url, max_size=2**26, open_timeout=5, compression=None
                ) as ws:
                    backoff_s = 0.05
                    self.generation += 1
                    self._ws = ws
                    await ws.send(FEATURE_FLAGS)  # ComfyUI reads it only as the first message
                    self.last_event_at = time.monotonic()
                    self.connected.set()
                    log.info("connected to ComfyUI's event stream (client_id %s)", self.client_id)
                    await self._reconcile(list(self.waiters.values()), lost_by_comfyui)
                    await self._read(ws)
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, websockets.WebSocketException) as e:
                if self.connected.is_set():
                    log.warning("lost ComfyUI's event stream (%r); reconnecting", e)
            except Exception:
                log.exception("bug while reading ComfyUI's event stream; reconnecting")
            self._ws = None
            self.connected.clear()
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, self.max_backoff_s)

    async def _read(self, ws: ClientConnection) -> None:
        async for message in ws:
            self.last_event_at = time.monotonic()
            if isinstance(message, bytes):
                self._preview(message)
                continue
            try:
                event = json.loads(message)
            except ValueError:
                event = None
            data = event.get("data") if isinstance(event, dict) else None
            if not isinstance(event, dict) or not isinstance(data, dict | None):
                log.warning("ignored a malformed ComfyUI event: %.200s", message)
                continue
            kind, data = str(event.get("type")), data or {}
            self.handle(kind, data)
            for listener in self.listeners:
                listener(kind, data)

    # -- events -------------------------------------------------------------------------------
    def handle(self, kind: str, data: dict[str, Any]) -> None:
        """Apply one ComfyUI event."""
        if kind == "status":
            status = data.get("status")
            exec_info = status.get("exec_info") if isinstance(status, dict) else None
            remaining = exec_info.get("queue_remaining") if isinstance(exec_info, dict) else None
            if isinstance(remaining, int):
                self.queue_depth = remaining
                self._watch_queue_shrink()
            return
        if kind == "execution_start" or (kind == "executing" and data.get("node") is not None):
            self.executing = str(data.get("prompt_id"))
        elif kind == "executing":
            self.executing = None  # the prompt is done
        waiter = self.waiters.get(str(data.get("prompt_id")))
        if waiter is not None and (ending := waiter.apply(kind, data)) is not None:
            self.settle(waiter.prompt_id, ending.error)

    def _preview(self, message: bytes) -> None:
        frame = decode(message)
        prompt_id = frame and (frame.prompt_id or self.executing)
        waiter = self.waiters.get(prompt_id) if frame and prompt_id else None
        if frame and waiter is not None and waiter.on_preview is not None:
            waiter.on_preview(frame, frame.node or waiter.progress.node)

    def _fewer_queued_than_outstanding(self) -> list[PromptWaiter]:
        """The outstanding prompts, when ComfyUI's queue holds fewer than that; else []."""
        outstanding = [w for w in self.waiters.values() if w.outstanding]
        return outstanding if self.queue_depth < len(outstanding) else []

    def _watch_queue_shrink(self) -> None:
        """Ask ComfyUI about our prompts once its queue has held fewer than them for a while.

        A count can be stale by one: the status event of a submission may arrive after the
        submission's HTTP answer. Only a shortfall that no later status event corrects within
        QUEUE_SHRINK_CONFIRM_S means prompts were removed behind the gateway.
        """
        if not self._fewer_queued_than_outstanding():
            if self._shrink_timer is not None:
                self._shrink_timer.cancel()
                self._shrink_timer = None
        elif self._shrink_timer is None:
            loop = asyncio.get_running_loop()
            self._shrink_timer = loop.call_later(QUEUE_SHRINK_CONFIRM_S, self._shrink_confirmed)

    def _shrink_confirmed(self) -> None:
        self._shrink_timer = None
        if missing := self._fewer_queued_than_outstanding():
            self._check_soon(missing, removed_behind_gateway)

    def _check_soon(self, waiters: list[PromptWaiter], lost: LostError) -> None:
        """Reconcile in the background (from an event handler, which must not wait)."""
        task = asyncio.create_task(self._reconcile(waiters, lost), name="prompt-tracker-check")
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _reconcile(self, waiters: list[PromptWaiter], lost: LostError) -> bool:
        """Settle submitted prompts that ComfyUI has finished or no longer has, asked over HTTP.

        `lost` is the error for a prompt ComfyUI does not know. True when ComfyUI made progress
        its events did not tell: a prompt finished, or one started that we saw no start of.
        """
        pending = [w for w in waiters if w.submitted and not w.done.done()]
        if not pending:
            return False
        log.debug("asking ComfyUI where %d prompt(s) are", len(pending))
        try:
            found = await self.client.lookup([w.prompt_id for w in pending])
        except GatewayError as e:
            # Without an answer nothing would ever settle them: fail rather than hang.
            log.warning("could not check pending prompts in ComfyUI: %s", e)
            for waiter in pending:
                self.settle(
                    waiter.prompt_id,
                    ComfyUnavailable(f"lost track of the job in ComfyUI: {e.message}"),
                )
            return False
        unreported = False
        for waiter in pending:
            where: PromptLookup = found[waiter.prompt_id]
            if waiter.done.done():
                continue  # an event settled it while we asked
            if where.state == "finished":
                unreported = True
                self.settle(waiter.prompt_id, waiter.apply_history(where.entry).error)
            elif where.state == "unknown":
                log.warning("prompt %s is neither queued nor finished in ComfyUI", waiter.prompt_id)
                self.settle(waiter.prompt_id, lost())
            elif where.state == "running" and waiter.started_at is None:
                unreported = True
        return unreported

    async def _watch_silence(self) -> None:
        """While prompts are pending and the stream is silent, ask ComfyUI over HTTP."""
        while True:
            await asyncio.sleep(min(self.silence_s / 2, 5.0))
            quiet_s = time.monotonic() - self.last_event_at
            pending = [w for w in self.waiters.values() if w.submitted and not w.done.done()]
            if not pending or quiet_s < self.silence_s or not self.connected.is_set():
                continue
            self.last_event_at = time.monotonic()  # at most one check per silent period
            if await self._reconcile(pending, lost_by_comfyui) and self._ws is not None:
                log.warning(
                    "ComfyUI's event stream was silent for %.1fs while ComfyUI made progress: "
                    "reconnecting it",
                    quiet_s,
                )
                self.reconnects_forced += 1
                # Closing makes _run reconnect and reconcile; abort if the close cannot finish.
                self._ws.transport.abort()
