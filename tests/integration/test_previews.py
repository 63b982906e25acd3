"""Live latent previews (issue 22), on the tenants' session gateway: PREVIEW_METHOD's default
`auto` gives latent2rgb previews of the tiny checkpoint on CPU, which reach the job's owner on
its SSE stream and /sdapi/v1/progress, stop with the job, and never reach another key."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.integration.harness import Gateway, eventually, graph
from tests.integration.tenants import leave_comfyui_idle
from tests.integration.test_delivery import read_sse

# A 50-step job, and the tenants' gateway's start for the first test, on a busy CPU.
pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def gateway(tenant_gateway: Gateway) -> Gateway:
    return tenant_gateway


def sampling(width: int, height: int, steps: int) -> dict[str, Any]:
    prompt = graph("t2i")
    prompt["4"]["inputs"].update(width=width, height=height)
    prompt["5"]["inputs"]["steps"] = steps
    return prompt


def picture(data_url: str) -> Image.Image:
    head, _, encoded = data_url.partition(";base64,")
    assert head in ("data:image/jpeg", "data:image/png"), head
    image = Image.open(io.BytesIO(base64.b64decode(encoded)))
    image.load()
    return image


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def in_background(send: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Run a blocking request in a thread; its answer lands in the dict."""
    outcome: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: outcome.update(answer=send()))
    worker.start()
    return worker, outcome


def test_previews_arrive_while_sampling_and_stop_with_the_job(
    alice: httpx.Client, bob: httpx.Client
) -> None:
    body = {"id": "preview-sse", "prompt": sampling(128, 64, 6)}
    headers = {"Accept": "text/event-stream"}
    with alice.stream("POST", "/prompt", json=body, headers=headers) as response:
        assert response.status_code == 200
        events = read_sse(response)
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "complete", kinds
    previews = [e for e in events if e["event"] == "preview"]
    assert previews, kinds
    assert kinds.index("running") < kinds.index("preview")  # during sampling, not after
    for event in previews:
        data = event["data"]
        assert (data["node"], data["node_name"]) == ("5", "KSampler")
        assert 0 <= data["step"] <= data["max"] == 6
        image = picture(data["image"])
        assert image.width == 2 * image.height  # the latent's ratio: 128x64 -> 16x8
    # the owner's alone
    assert bob.get("/prompt/preview-sse/events").status_code == 404


SLOW_READS = 20  # events read one a second, then the rest at once


def test_a_slow_reader_gets_the_newest_preview_and_memory_stays_flat(
    gateway: Gateway, alice: httpx.Client
) -> None:
    body = {"id": "preview-slow", "prompt": sampling(64, 64, 50)}
    before_kb = rss_kb(gateway.pid)
    worker, outcome = in_background(lambda: alice.post("/prompt", json=body))
    try:
        eventually(lambda: alice.get("/prompt/preview-slow").status_code == 200, what="the job")
        got: list[dict[str, Any]] = []
        during_kb = before_kb
        with alice.stream("GET", "/prompt/preview-slow/events") as response:
            current: dict[str, Any] = {}
            for line in response.iter_lines():
                if line.startswith(":"):
                    continue
                if line:
                    key, _, value = line.partition(": ")
                    current[key] = json.loads(value) if key == "data" else value
                    continue
                got.append(current)
                if current.get("event") in ("complete", "failed"):
                    break
                current = {}
                if len(got) == SLOW_READS:
                    during_kb = rss_kb(gateway.pid)
                elif len(got) < SLOW_READS:
                    time.sleep(1.0)
        after_kb = rss_kb(gateway.pid)
    finally:
        finish(gateway, worker)
    assert outcome["answer"].status_code == 200
    kinds = [e["event"] for e in got]
    assert kinds[-1] == "complete" and "preview" in kinds, kinds
    steps = [e["data"]["step"] for e in got if e["event"] == "preview"]
    assert steps == sorted(steps), steps  # never an older one after a newer
    for event in got:
        if event["event"] == "preview":
            picture(event["data"]["image"])
    # a reconnect after the end replays no preview
    with alice.stream("GET", "/prompt/preview-slow/events") as response:
        assert "preview" not in [e["event"] for e in read_sse(response)]
    # the gateway held no backlog for the slow reader: its memory stayed flat
    assert max(during_kb, after_kb) - before_kb < 200 * 1024, (before_kb, during_kb, after_kb)


def finish(gateway: Gateway, worker: threading.Thread) -> None:
    """Wait for the background request; if it hangs, leave ComfyUI idle for the next test."""
    worker.join(240)
    if worker.is_alive():
        leave_comfyui_idle(gateway)
        worker.join(60)


def test_a1111_current_image_is_the_keys_running_preview(
    gateway: Gateway, alice: httpx.Client, bob: httpx.Client, admin: httpx.Client
) -> None:
    body = {"prompt": "x", "width": 128, "height": 64, "steps": 20}
    worker, outcome = in_background(lambda: alice.post("/sdapi/v1/txt2img", json=body))
    try:
        eventually(
            lambda: alice.get("/sdapi/v1/progress").json()["current_image"] is not None,
            what="a preview in alice's progress",
        )
        encoded = alice.get("/sdapi/v1/progress").json()["current_image"]
        image = Image.open(io.BytesIO(base64.b64decode(encoded)))
        assert image.format == "PNG" and image.width == 2 * image.height
        assert bob.get("/sdapi/v1/progress").json()["current_image"] is None
        assert admin.get("/sdapi/v1/progress").json()["current_image"] is not None
    finally:
        finish(gateway, worker)
    assert outcome["answer"].status_code == 200
    assert alice.get("/sdapi/v1/progress").json()["current_image"] is None
