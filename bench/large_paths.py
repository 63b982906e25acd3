"""The ways a large output leaves the gateway, each as a client of it would take it, and the same
output taken straight from ComfyUI by a careful client. Each returns the seconds from the
request until the last byte was in hand, and how many bytes arrived; no body is kept."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

from bench.webhook_sink import WebhookSink

Graph = dict[str, dict[str, Any]]
TIMEOUT = httpx.Timeout(1800, connect=10)


class PathFailed(Exception):
    """A request on a path went wrong; the message says how."""


async def drain(response: httpx.Response) -> int:
    """Read a streamed answer to its end, keeping nothing: its size."""
    size = 0
    async for piece in response.aiter_raw():
        size += len(piece)
    return size


async def streamed(
    http: httpx.AsyncClient, method: str, url: str, expect: int = 200, **kwargs: Any
) -> int:
    async with http.stream(method, url, **kwargs) as response:
        if response.status_code != expect:
            text = (await response.aread())[:300]
            raise PathFailed(f"{method} {url}: {response.status_code} {text!r}")
        return await drain(response)


async def sync_prompt(http: httpx.AsyncClient, url: str, graph: Graph, sink: WebhookSink) -> int:
    """POST /prompt, the answer with the output as base64 in its JSON."""
    return await streamed(http, "POST", f"{url}/prompt", json={"prompt": graph})


async def by_webhook(
    http: httpx.AsyncClient, url: str, graph: Graph, sink: WebhookSink, field: str
) -> int:
    """POST /prompt with `field` (webhook or webhook_v2): 202, then the delivery's body."""
    hook = f"/{field}/{uuid.uuid4().hex}"
    delivered = sink.expect(hook)
    answer = await http.post(f"{url}/prompt", json={"prompt": graph, field: sink.url(hook)})
    if answer.status_code != 202:
        raise PathFailed(f"POST /prompt with {field}: {answer.status_code} {answer.text[:300]}")
    received = await asyncio.wait_for(delivered, TIMEOUT.read)
    if received.signature_ok is False:
        raise PathFailed(f"{field}: the signature did not match the body")
    if field == "webhook_v2" and received.signature_ok is None:
        raise PathFailed("webhook_v2: unsigned, with WEBHOOK_SECRET set")
    return received.size


async def legacy_webhook(http: httpx.AsyncClient, url: str, graph: Graph, sink: WebhookSink) -> int:
    return await by_webhook(http, url, graph, sink, "webhook")


async def webhook_v2(http: httpx.AsyncClient, url: str, graph: Graph, sink: WebhookSink) -> int:
    return await by_webhook(http, url, graph, sink, "webhook_v2")


async def v1_file(http: httpx.AsyncClient, url: str, graph: Graph, sink: WebhookSink) -> int:
    """POST /api/v1/prompts asking for the file itself. The output is a .latent, so the Accept
    that picks the file is its own type (a PNG's clients send image/png)."""
    headers = {"accept": "application/octet-stream"}
    return await streamed(http, "POST", f"{url}/api/v1/prompts", json=graph, headers=headers)


async def v2_asset(http: httpx.AsyncClient, url: str, graph: Graph, sink: WebhookSink) -> int:
    """POST /api/v2/jobs, poll the job until it has ended, GET its output's content URL."""
    submitted = await http.post(f"{url}/api/v2/jobs", json={"workflow": graph})
    if submitted.status_code != 201:
        raise PathFailed(f"POST /api/v2/jobs: {submitted.status_code} {submitted.text[:300]}")
    job_id = submitted.json()["id"]
    while True:
        job = (await http.get(f"{url}/api/v2/jobs/{job_id}")).json()
        if job["status"] in ("succeeded", "failed", "canceled", "expired"):
            break
        await asyncio.sleep(0.1)
    if job["status"] != "succeeded" or not job["outputs"]:
        raise PathFailed(f"v2 job {job_id}: {job['status']} {str(job.get('error'))[:300]}")
    return await streamed(http, "GET", job["outputs"][0]["url"])


AnswerPath = Callable[[httpx.AsyncClient, str, Graph, WebhookSink], Awaitable[int]]

PATHS: dict[str, AnswerPath] = {
    "sync": sync_prompt,
    "webhook": legacy_webhook,
    "webhook_v2": webhook_v2,
    "v1_file": v1_file,
    "v2_asset": v2_asset,
}


async def direct(comfy_url: str, graph: Graph, output_dir: Path) -> tuple[float, int]:
    """A careful client of raw ComfyUI: its websocket open before submitting, the prompt's
    `executed` events for the file names, then each file streamed from /view. Seconds from the
    submit to the last byte, and the bytes; the files are removed afterwards."""
    client_id = uuid.uuid4().hex
    prompt_id = str(uuid.uuid4())
    ws_url = comfy_url.replace("http", "ws", 1) + f"/ws?clientId={client_id}"
    files: list[dict[str, str]] = []
    async with (
        connect(ws_url, max_size=2**26, open_timeout=10) as ws,
        httpx.AsyncClient(base_url=comfy_url, timeout=TIMEOUT) as http,
    ):
        started = time.perf_counter()
        body = {"prompt": graph, "client_id": client_id, "prompt_id": prompt_id}
        answer = await http.post("/prompt", json=body)
        if answer.status_code != 200:
            raise PathFailed(f"ComfyUI POST /prompt: {answer.status_code} {answer.text[:300]}")
        async for message in ws:
            if not isinstance(message, str):
                continue
            event = json.loads(message)
            data = event.get("data") or {}
            if data.get("prompt_id") != prompt_id:
                continue
            if event["type"] == "executed":
                for items in (data.get("output") or {}).values():
                    files += [i for i in items if isinstance(i, dict) and "filename" in i]
            elif event["type"] == "executing" and data.get("node") is None:
                break
            elif event["type"] in ("execution_error", "execution_interrupted"):
                raise PathFailed(f"ComfyUI: {event['type']} {str(data)[:300]}")
        size = 0
        for file in files:
            params = {k: file.get(k, "") for k in ("filename", "subfolder", "type")}
            size += await streamed(http, "GET", "/view", params=params)
        elapsed = time.perf_counter() - started
    for file in files:
        with contextlib.suppress(FileNotFoundError):
            (output_dir / file.get("subfolder", "") / file["filename"]).unlink()
    return elapsed, size
