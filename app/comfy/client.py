"""ComfyClient: the HTTP calls the gateway makes to its ComfyUI, with ComfyUI's errors mapped."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx

from app.comfy.rejection import rejection
from app.comfy.wire import Wire, WireError, WireResponse
from app.core.errors import ComfyFailed, ComfyUnavailable, NotFound

log = logging.getLogger(__name__)

T = TypeVar("T")
Graph = dict[str, Any]
PromptState = Literal["pending", "running", "finished", "unknown"]


@dataclass(frozen=True)
class PromptLookup:
    """Where one prompt is in ComfyUI, asked over HTTP rather than learnt from events."""

    state: PromptState
    # For a finished prompt, what /history holds: `outputs` and `status` (with `messages`).
    entry: dict[str, Any] = field(default_factory=dict)


class ComfyClient:
    """Talks to one ComfyUI over HTTP; every transport failure becomes ComfyUnavailable.

    `probe()` learns what this ComfyUI offers: its version, and whether it has the jobs API
    (`/api/jobs/{id}`, `/api/jobs/{id}/cancel`, ComfyUI 0.4 and later), which answers for one
    prompt in one call and cancels without a race; older ones use `/history`, `/queue` and
    `/interrupt`.
    """

    def __init__(self, base_url: str, *, timeout_s: float = 30.0) -> None:
        self.base_url = base_url
        self.version: str | None = None  # ComfyUI's, once probed
        self.jobs_api = False
        self.devices: list[dict[str, Any]] = []  # its /system_stats `devices`, once probed
        # Calls with a JSON answer go over Wire (a job's submit is on its critical path);
        # httpx streams output files and sends the multipart uploads.
        self.wire = Wire(base_url, timeout_s=timeout_s)
        self.http = httpx.AsyncClient(base_url=base_url, timeout=timeout_s)

    async def aclose(self) -> None:
        await self.wire.aclose()
        await self.http.aclose()

    async def _call(self, what: str, send: Callable[[], Awaitable[T]]) -> T:
        try:
            return await send()
        except (httpx.TransportError, WireError) as e:
            raise ComfyUnavailable(f"ComfyUI is not reachable ({what}: {e!r})") from e

    async def _get_json(self, path: str, **params: str) -> Any:
        response = await self._call(f"GET {path}", lambda: self.wire.get(path, params))
        if response.status_code == 404:
            raise NotFound(f"ComfyUI has no {path}")
        if response.status_code >= 400:
            raise ComfyUnavailable(f"ComfyUI answered {response.status_code} to GET {path}")
        return response.json()

    async def system_stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._get_json("/system_stats")
        return result

    async def probe(self) -> None:
        """Learn ComfyUI's version and whether it has the jobs API (a capability, not a version)."""
        stats = await self.system_stats()
        system = stats.get("system") or {}
        devices = stats.get("devices")
        self.devices = (
            [d for d in devices if isinstance(d, dict)] if isinstance(devices, list) else []
        )
        self.version = str(system.get("comfyui_version") or "unknown")
        response = await self._call(
            "GET /api/jobs", lambda: self.wire.get("/api/jobs", {"limit": "1"})
        )
        self.jobs_api = response.status_code == 200 and "jobs" in _json_or_empty(response)

    async def submit(
        self,
        graph: Graph,
        *,
        prompt_id: str,
        client_id: str,
        extra_data: dict[str, str] | None = None,
        number: float | None = None,
    ) -> None:
        """Queue a graph (before those of a higher `number`: ComfyUI's own order, by default
        its count of prompts); ComfyUI's refusal becomes PromptRejected with its node_errors.

        `extra_data` (a partner-node key) ComfyUI keeps out of its queue and history views."""
        body: dict[str, Any] = {"prompt": graph, "prompt_id": prompt_id, "client_id": client_id}
        if extra_data:
            body["extra_data"] = extra_data
        if number is not None:
            body["number"] = number
        response = await self._call("POST /prompt", lambda: self.wire.post("/prompt", body))
        if response.status_code == 200:
            return
        if response.status_code == 400:
            raise rejection(response.json())
        if response.status_code >= 500:
            # ComfyUI is up (it answered): it failed on this graph. Retrying would fail again.
            raise ComfyFailed(
                f"ComfyUI failed on this graph with HTTP {response.status_code} "
                f"({_first_line(response.text)}); its log (in the gateway's) says why",
                location="prompt",
                details={
                    "comfyui_status": response.status_code,
                    "comfyui_body": response.text[:500],
                },
            )
        raise ComfyUnavailable(
            f"ComfyUI answered {response.status_code} to POST /prompt: {response.text[:300]}"
        )

    async def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The history entry of one prompt, or None while it has none."""
        entries = await self._get_json(f"/history/{prompt_id}")
        entry: dict[str, Any] | None = entries.get(prompt_id)
        return entry

    async def queue(self) -> tuple[list[str], list[str]]:
        """The prompt ids running and pending, in that order (pending in the order they run:
        ComfyUI lists its queue as the heap it keeps)."""
        data = await self._get_json("/queue")
        running = [item[1] for item in data.get("queue_running", [])]
        pending = [item[1] for item in sorted(data.get("queue_pending", []), key=_number)]
        return running, pending

    async def lookup(self, prompt_ids: list[str]) -> dict[str, PromptLookup]:
        """Where each prompt is now: pending, running, finished (with its history), or unknown."""
        if self.jobs_api:
            found = await asyncio.gather(*(self._job(prompt_id) for prompt_id in prompt_ids))
            return dict(zip(prompt_ids, found, strict=True))
        running, pending = await self.queue()
        states: dict[str, PromptLookup] = {}
        for prompt_id in prompt_ids:
            entry = await self.history(prompt_id)
            if entry is not None:
                states[prompt_id] = PromptLookup("finished", entry)
            elif prompt_id in running:
                states[prompt_id] = PromptLookup("running")
            elif prompt_id in pending:
                states[prompt_id] = PromptLookup("pending")
            else:
                states[prompt_id] = PromptLookup("unknown")
        return states

    async def _job(self, prompt_id: str) -> PromptLookup:
        path = f"/api/jobs/{prompt_id}"
        response = await self._call(f"GET {path}", lambda: self.wire.get(path))
        if response.status_code == 404:
            return PromptLookup("unknown")
        if response.status_code != 200:
            raise ComfyUnavailable(f"ComfyUI answered {response.status_code} to GET {path}")
        job = response.json()
        status = job.get("status")
        if status == "pending":
            return PromptLookup("pending")
        if status == "in_progress":
            return PromptLookup("running")
        entry = {"outputs": job.get("outputs") or {}, "status": job.get("execution_status") or {}}
        return PromptLookup("finished", entry)

    async def cancel(self, prompt_id: str) -> None:
        """Remove a pending prompt from the queue and interrupt it if it is running."""
        if self.jobs_api:  # one call, and it interrupts only this prompt, never the next one
            path = f"/api/jobs/{prompt_id}/cancel"
            await self._call(f"POST {path}", lambda: self.wire.post(path))
            return
        await self._call(
            "POST /queue",
            lambda: self.wire.post("/queue", {"delete": [prompt_id]}),
        )
        await self._call(
            "POST /interrupt",
            lambda: self.wire.post("/interrupt", {"prompt_id": prompt_id}),
        )

    async def view_into(self, filename: str, subfolder: str, folder_type: str, target: Path) -> int:
        """Stream an output file from /view into target, a piece at a time; its size."""
        params = {"filename": filename, "subfolder": subfolder, "type": folder_type}

        async def fetch() -> int:
            async with self.http.stream("GET", "/view", params=params) as response:
                if response.status_code != 200:
                    raise ComfyUnavailable(
                        f"ComfyUI answered {response.status_code} for output file {filename!r}"
                    )
                size = 0
                f = await asyncio.to_thread(open, target, "wb")
                try:
                    async for piece in response.aiter_bytes(1 << 20):
                        await asyncio.to_thread(f.write, piece)
                        size += len(piece)
                finally:
                    f.close()
                return size

        return await self._call("GET /view", fetch)

    async def models(self) -> dict[str, list[str]]:
        """Every model folder ComfyUI knows, with its files; a folder that errors lists none."""
        folders: list[str] = await self._get_json("/models")

        async def files(folder: str) -> list[str]:
            try:
                listed = await self._get_json(f"/models/{folder}")
            except (NotFound, ComfyUnavailable, ValueError) as e:
                log.warning("model folder %r could not be listed: %s", folder, e)
                return []
            return [str(name) for name in listed] if isinstance(listed, list) else []

        listings = await asyncio.gather(*(files(f) for f in folders))
        return dict(zip(folders, listings, strict=True))

    async def upload(self, data: bytes, name: str, subfolder: str) -> str:
        """Store an input file in ComfyUI's input folder; returns the value a loader takes."""
        files = {"image": (name, data, "application/octet-stream")}
        form = {"subfolder": subfolder, "type": "input", "overwrite": "true"}
        response = await self._call(
            "POST /upload/image", lambda: self.http.post("/upload/image", files=files, data=form)
        )
        if response.status_code != 200:
            raise ComfyUnavailable(
                f"ComfyUI answered {response.status_code} to an input upload: {response.text[:200]}"
            )
        stored = response.json()
        return (
            f"{stored['subfolder']}/{stored['name']}" if stored.get("subfolder") else stored["name"]
        )

    async def object_info(self) -> dict[str, dict[str, Any]]:
        """Every node class ComfyUI has loaded: its inputs, outputs and allowed values."""
        info: dict[str, dict[str, Any]] = await self._get_json("/object_info")
        return info

    async def model_folders(self) -> list[str]:
        """The model folders ComfyUI knows (`checkpoints`, `loras`, ...)."""
        listed = await self._get_json("/models")
        return [str(name) for name in listed] if isinstance(listed, list) else []

    async def model_files(self, folder: str) -> list[str]:
        """The files of one model folder (`checkpoints`, `loras`), as ComfyUI lists them now."""
        listed = await self._get_json(f"/models/{folder}")
        return [str(name) for name in listed] if isinstance(listed, list) else []


def _number(item: list[Any]) -> float:
    """The number ComfyUI orders a queue item by (its first field)."""
    return float(item[0]) if item and isinstance(item[0], int | float) else 0.0


def _json_or_empty(response: WireResponse) -> Any:
    try:
        return response.json()
    except ValueError:
        return {}


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines[:2])[:200] or "no message"
