"""ComfyUI as routes and facades may see it: what it offers, and a door for the passthrough.

The Gateway holds one as `gateway.comfy`; nothing above the gateway touches ComfyUI's client,
tracker or process directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from app.comfy.catalog import Catalog
from app.comfy.client import ComfyClient
from app.comfy.process import ComfyProcess
from app.comfy.tracker import PromptTracker


class ComfyAccess:
    """The running ComfyUI: its version, models and nodes; forwarding for the passthrough."""

    def __init__(
        self,
        client: ComfyClient,
        tracker: PromptTracker,
        process: ComfyProcess,
        stopping: Callable[[], bool],
    ) -> None:
        self._client = client
        self._tracker = tracker
        self._process = process
        self._stopping = stopping

    @property
    def version(self) -> str | None:
        return self._client.version

    async def models(self) -> dict[str, list[str]]:
        """Every model folder ComfyUI knows, with its files."""
        return await self._client.models()

    async def model_files(self, folder: str) -> list[str]:
        return await self._client.model_files(folder)

    async def catalog(self) -> Catalog:
        """ComfyUI's node classes and model files, read now."""
        return await Catalog.fetch(self._client)

    @property
    def reachable(self) -> bool:
        """ComfyUI runs and the gateway is not shutting down: worth forwarding a request."""
        return not self._stopping() and self._process.running

    async def forward(
        self, method: str, target: str, headers: list[tuple[str, str]], content: Any
    ) -> httpx.Response:
        """Send a client's request to ComfyUI as it came (see ComfyClient.forward)."""
        return await self._client.forward(method, target, headers, content)

    @property
    def ws_url(self) -> str:
        """ComfyUI's websocket, without a query."""
        return self._client.base_url.replace("http", "ws", 1) + "/ws"

    def is_own_client_id(self, client_id: str | None) -> bool:
        """True for the clientId of the gateway's own event stream."""
        return client_id == self._tracker.client_id

    def is_gateway_prompt(self, prompt_id: str) -> bool:
        """True for a prompt one of the gateway's own jobs submitted."""
        return prompt_id in self._tracker.waiters
