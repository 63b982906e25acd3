"""ComfyUI as routes and facades may see it: what it offers, and a door for the passthrough.

The Gateway holds one as `gateway.comfy`; nothing above the gateway touches an instance's client,
tracker or process directly. ComfyUI's own API (the passthrough, /models, the catalog) is the
first instance's: in a pool every instance has the same nodes and models.

What the passthrough (and the facades' reads of ComfyUI's own API) forwards goes over
connections of its own, at most PASSTHROUGH_MAX_CONNECTIONS, apart from the pool the jobs use:
clients that hold their connections (a slow upload, an answer never read) can take only these,
and each wait has an end (PASSTHROUGH_TIMEOUT_S: connecting, a free connection, each read and
write), so no number of them stops a job.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from app.comfy.catalog import Catalog
from app.core.errors import ComfyUnavailable
from app.core.settings import Settings
from app.gateway.pool import Pool


class ComfyAccess:
    """The running ComfyUI: its version, models and nodes; forwarding for the passthrough."""

    def __init__(self, pool: Pool, stopping: Callable[[], bool], settings: Settings) -> None:
        self._pool = pool
        self._first = pool.first
        self._stopping = stopping
        self.max_connections = most = settings.passthrough_max_connections
        self.timeout_s = settings.passthrough_timeout_s
        self.http = httpx.AsyncClient(
            base_url=self._first.client.base_url,
            timeout=self.timeout_s,
            limits=httpx.Limits(max_connections=most, max_keepalive_connections=most),
        )

    async def aclose(self) -> None:
        await self.http.aclose()

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
        """Send a client's request on to ComfyUI; the answer streams (the caller closes it).

        `target` is the path and query, percent-encoded; `content` None, bytes or an async
        iterator of body chunks.
        """
        request = self.http.build_request(method, target, headers=headers, content=content)
        try:
            return await self.http.send(request, stream=True)
        except httpx.PoolTimeout:
            raise ComfyUnavailable(
                f"all PASSTHROUGH_MAX_CONNECTIONS ({self.max_connections}) "
                f"connections to ComfyUI stayed busy for PASSTHROUGH_TIMEOUT_S "
                f"({self.timeout_s:g}s)"
            ) from None
        except httpx.TransportError as e:
            raise ComfyUnavailable(f"ComfyUI is not reachable ({method} {target}: {e!r})") from e

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
