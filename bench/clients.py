"""The two ways of running the trivial graph: directly against ComfyUI, and through the gateway."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

LOOPBACK = "127.0.0.1"

REQUEST_TIMEOUT_S = 60.0

Graph = dict[str, dict[str, Any]]


class BenchClient(Protocol):
    """One way of running the graph: `request()` raises on any failure; `last_s` is its time."""

    last_s: float

    async def request(self) -> None: ...


class BenchError(Exception):
    """A request or the set-up went wrong; the message says how."""


def trivial_graph(prefix: str) -> Graph:
    """EmptyImage 64x64 -> SaveImage, with a colour no earlier request used (defeats the cache)."""
    color = next(_colors) % 0x1000000
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": color},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


@dataclass
class Pending:
    done: asyncio.Future[None]
    files: list[dict[str, str]] = field(default_factory=list)


class DirectClient:
    """A careful client of raw ComfyUI: one websocket, one HTTP client, events by prompt id."""

    def __init__(self, comfy_url: str, output_dir: Path | None) -> None:
        self.comfy_url = comfy_url.rstrip("/")
        self.output_dir = output_dir
        self.client_id = uuid.uuid4().hex
        self.http = httpx.AsyncClient(base_url=self.comfy_url, timeout=REQUEST_TIMEOUT_S)
        self.pending: dict[str, Pending] = {}
        self.last_s = 0.0  # the latest request's duration
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        ws_url = self.comfy_url.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}"
        try:
            self._ws = await connect(ws_url, max_size=2**26, open_timeout=10)
        except (OSError, TimeoutError, WebSocketException) as e:
            raise BenchError(f"cannot open ComfyUI's websocket {ws_url}: {e!r}") from e
        self._reader = asyncio.create_task(self._read(self._ws))

    async def close(self) -> None:
        if self._reader:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._ws:
            await self._ws.close()
        await self.http.aclose()

    async def _read(self, ws: ClientConnection) -> None:
        error: BaseException = BenchError("ComfyUI's websocket closed")
        try:
            async for message in ws:
                if isinstance(message, str):
                    event = json.loads(message)
                    self._handle(event.get("type"), event.get("data") or {})
        except Exception as e:
            error = BenchError(f"ComfyUI's websocket failed: {e!r}")
        for waiting in self.pending.values():
            if not waiting.done.done():
                waiting.done.set_exception(error)

    def _handle(self, kind: str | None, data: dict[str, Any]) -> None:
        waiting = self.pending.get(str(data.get("prompt_id")))
        if waiting is None or waiting.done.done():
            return
        if kind == "executed":
            images = (data.get("output") or {}).get("images") or []
            waiting.files += [i for i in images if i.get("type", "output") == "output"]
        elif kind == "executing" and data.get("node") is None:
            waiting.done.set_result(None)
        elif kind in ("execution_error", "execution_interrupted"):
            waiting.done.set_exception(BenchError(f"{kind}: {str(data)[:300]}"))

    async def run(self) -> tuple[list[dict[str, str]], list[str]]:
        """Submit a fresh graph, wait for it, fetch its files: the files and their base64."""
        if self._reader is None or self._reader.done():
            raise BenchError("ComfyUI's websocket is not connected")
        prompt_id = str(uuid.uuid4())  # ComfyUI 0.33 takes only the canonical form
        waiting = Pending(asyncio.get_running_loop().create_future())
        self.pending[prompt_id] = waiting  # before submitting: no event can be missed
        try:
            body = {
                "prompt": trivial_graph(f"direct_{prompt_id}"),
                "client_id": self.client_id,
                "prompt_id": prompt_id,
            }
            response = await self.http.post("/prompt", json=body)
            if response.status_code != 200:
                raise BenchError(f"POST /prompt: {response.status_code} {response.text[:300]}")
            await asyncio.wait_for(waiting.done, REQUEST_TIMEOUT_S)
            return waiting.files, [await self._fetch(f) for f in waiting.files]
        finally:
            del self.pending[prompt_id]

    async def _fetch(self, file: dict[str, str]) -> str:
        params = {"filename": file["filename"], "subfolder": file.get("subfolder", "")}
        response = await self.http.get("/view", params={**params, "type": "output"})
        if response.status_code != 200:
            raise BenchError(f"GET /view {params}: {response.status_code}")
        return base64.b64encode(response.content).decode()

    async def request(self) -> None:
        """One timed request; its files are removed afterwards (untimed) when the folder is known.

        Removing keeps ComfyUI's output folder small for both paths: SaveImage lists the folder
        on every save, and the gateway removes its own files.
        """
        start = time.perf_counter()
        files, images = await self.run()
        elapsed = time.perf_counter() - start
        self._remove(files)
        if len(images) != 1 or not images[0]:
            raise BenchError(f"direct: expected one image, got {len(images)}")
        self.last_s = elapsed

    def _remove(self, files: list[dict[str, str]]) -> None:
        if self.output_dir is None:
            return
        for file in files:
            with contextlib.suppress(FileNotFoundError):
                (self.output_dir / file.get("subfolder", "") / file["filename"]).unlink()


class GatewayClient:
    """POST /prompt on the gateway; one image must come back, base64, with status 200."""

    def __init__(self, gateway_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=gateway_url.rstrip("/"), timeout=REQUEST_TIMEOUT_S)
        self.last_s = 0.0

    async def close(self) -> None:
        await self.http.aclose()

    async def request(self) -> None:
        start = time.perf_counter()
        response = await self.http.post("/prompt", json={"prompt": trivial_graph("gateway")})
        if response.status_code != 200:
            raise BenchError(f"gateway: {response.status_code} {response.text[:300]}")
        images = response.json().get("images")
        self.last_s = time.perf_counter() - start
        if not isinstance(images, list) or len(images) != 1 or not images[0]:
            raise BenchError(f"gateway: expected one image, got {str(images)[:100]}")


_colors: Iterator[int] = itertools.count(1)
