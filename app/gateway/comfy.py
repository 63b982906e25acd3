"""ComfyUI as routes and facades may see it: what it offers, and a door for the passthrough.

The Gateway holds one as `gateway.comfy`; nothing above the gateway touches an instance's client,
tracker or process directly. ComfyUI's own API (the passthrough, /models, the catalog) is the
first instance's: in a pool every instance has the same nodes and models.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from app.comfy.catalog import Catalog
from app.gateway.pool import Pool


class ComfyAccess:
    """The running ComfyUI: its version, models and nodes; forwarding for the passthrough."""

    def __init__(self, pool: Pool, stopping: Callable[[], bool]) -> None:
        self._pool = pool
        self._first = pool.first
        self._stopping = stopping

    @property
    def version(self) -> str | None:
        return self._first.client.version

    async def models(self) -> dict[str, list[str]]:
        """Every model folder ComfyUI knows, with its files."""
        return await self._first.client.models()

    async def model_files(self, folder: str) -> list[str]:
        return await self._first.client.model_files(folder)

    async def catalog(self) -> Catalog:
        """ComfyUI's node classes and model files, read now."""
        return await Catalog.fetch(self._first.client)

    @property
    def reachable(self) -> bool:
        """The first ComfyUI runs and the gateway is not shutting down: worth forwarding to."""
        return not self._stopping() and self._first.process.running

    async def forward(
        self, method: str, target: str, headers: list[tuple[str, str]], content: Any
    ) -> httpx.Response:
        """Send a client's request to ComfyUI as it came (see ComfyClient.forward)."""
        return await self._first.client.forward(method, target, headers, content)

    @property
    def ws_url(self) -> str:
        """ComfyUI's websocket, without a query."""
        return self._first.client.base_url.replace("http", "ws", 1) + "/ws"

    def is_own_client_id(self, client_id: str | None) -> bool:
        """True for the clientId of one of the gateway's own event streams."""
        return any(client_id == i.tracker.client_id for i in self._pool.instances)

    def is_gateway_prompt(self, prompt_id: str) -> bool:
        """True for a prompt one of the gateway's own jobs submitted."""
        return any(prompt_id in i.tracker.waiters for i in self._pool.instances)
