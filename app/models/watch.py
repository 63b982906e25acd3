"""Watching ComfyUI's model listing, so that what uses it (the workflow routes: their enums,
availability and /docs) follows when a model lands or goes.

ComfyUI itself lists its model folders live (`/models/<folder>` and `/object_info` read the
folders again whenever a folder's modification time changed), so the gateway asks it rather
than the disk: a download or an eviction asks at once; files put there by hand are seen at the
next poll, every MODEL_WATCH_INTERVAL_S (0: only when woken).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from app.comfy.client import ComfyClient
from app.core.errors import GatewayError

log = logging.getLogger(__name__)


class ModelWatch:
    """ComfyUI's model files as last read, and who to tell when they change."""

    def __init__(self, client: ComfyClient, tick: Callable[[], None]) -> None:
        self.client = client
        self.tick = tick  # run after every poll: the cache saves its index when it changed
        self.listing: dict[str, list[str]] | None = None
        # Called in order when the listing changed.
        self.listeners: list[Callable[[], Awaitable[None]]] = []
        self._wake = asyncio.Event()
        self._refreshing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def start(self, listing: dict[str, list[str]], interval_s: float) -> None:
        """From this listing on, tell the listeners when ComfyUI's model files change."""
        self.listing = listing
        self._task = asyncio.create_task(self._poll(interval_s), name="model-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def wake(self) -> None:
        """Look again soon (a model went)."""
        self._wake.set()

    async def _poll(self, interval_s: float) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval_s or None)
            self._wake.clear()
            await self.refresh()
            self.tick()

    async def refresh(self) -> None:
        """Read ComfyUI's model files; if they changed, tell the listeners."""
        async with self._refreshing:
            try:
                listing = await self.client.models()
            except GatewayError as e:
                log.debug("ComfyUI's model files cannot be read now: %s", e)
                return
            if listing == self.listing:
                return
            self.listing = listing
            for listener in self.listeners:
                try:
                    await listener()
                except Exception:
                    log.exception("following a change of ComfyUI's model files failed")

    def lists(self, folder: str, name: str) -> bool:
        """Whether ComfyUI listed this file when last asked (True when it was never asked)."""
        return self.listing is None or name in self.listing.get(folder, [])
