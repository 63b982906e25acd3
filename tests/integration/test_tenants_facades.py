"""Keys as tenants through the facades: AUTOMATIC1111's /sdapi/v1 (progress, interrupt,
options), the Comfy API v2 (jobs, events, cancel, assets) and /api/v1 (images by digest, the last
prompt, the result cache), each scoped to the key that made the job; an admin key sees all.

The tenants' gateway of tests/integration/test_tenants.py (conftest's `tenant_gateway`).
"""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.integration.harness import Gateway, eventually
from tests.integration.tenants import leave_comfyui_idle
from tests.integration.test_prompt import empty_image, slow_graph, wait_for_comfy_queue

TINY = "tiny-sd15-random.safetensors"


@pytest.fixture(scope="module")
def gateway(tenant_gateway: Gateway) -> Gateway:
    return tenant_gateway


@pytest.fixture(autouse=True)
def idle_comfyui(gateway: Gateway) -> Iterator[None]:
    """Each test leaves ComfyUI idle, whatever it left running."""
    yield
    leave_comfyui_idle(gateway)


# --- /sdapi/v1 ----------------------------------------------------------------------------------


def test_a1111_progress_and_interrupt_are_each_keys_own(
    alice: httpx.Client, bob: httpx.Client, admin: httpx.Client
) -> None:
    outcome: dict[str, Any] = {}
    body = {"prompt": "x", "width": 256, "height": 256, "steps": 40, "n_iter": 3}
    worker = threading.Thread(
        target=lambda: outcome.update(answer=alice.post("/sdapi/v1/txt2img", json=body))
    )
    worker.start()
    try:
        eventually(
            lambda: 0 < alice.get("/sdapi/v1/progress").json()["progress"] < 1,
            what="alice's generation to make progress",
        )
        hers = alice.get("/sdapi/v1/progress").json()
        assert hers["state"]["job"].startswith("sdapi-") and hers["state"]["job_count"] == 1
        idle = bob.get("/sdapi/v1/progress").json()
        assert (idle["progress"], idle["state"]["job"], idle["state"]["job_count"]) == (0, "", 0)
        assert bob.post("/sdapi/v1/interrupt").status_code == 200  # stops bob's: none
        time.sleep(0.5)
        still = alice.get("/sdapi/v1/progress").json()
        assert still["state"]["job"] and not still["state"]["interrupted"]
        seen = admin.get("/sdapi/v1/progress").json()  # every key's generations
        assert seen["state"]["job"].startswith("sdapi-") and seen["state"]["job_count"] == 1
        assert admin.post("/sdapi/v1/interrupt").status_code == 200  # every key's
    finally:
        worker.join(120)
    answer = outcome["answer"]
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["images"]) < 3
    assert "interrupted" in answer.json()["info"]


def test_a1111_options_are_each_keys_own(alice: httpx.Client, bob: httpx.Client) -> None:
    models = alice.get("/sdapi/v1/sd-models").json()
    assert TINY in [m["title"] for m in models]
    assert alice.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2}).status_code == 200
    assert alice.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 2
    assert "CLIP_stop_at_last_layers" not in bob.get("/sdapi/v1/options").json()


# --- /api/v2 ------------------------------------------------------------------------------------


def test_v2_jobs_and_outputs_are_each_keys_own(
    alice: httpx.Client, bob: httpx.Client, admin: httpx.Client
) -> None:
    submitted = alice.post("/api/v2/jobs", json={"workflow": empty_image(0x445566)})
    assert submitted.status_code == 201, submitted.text
    job_id = submitted.json()["id"]

    def done() -> bool:
        return bool(alice.get(f"/api/v2/jobs/{job_id}").json()["status"] == "succeeded")

    eventually(done, what="alice's v2 job to succeed")
    job = alice.get(f"/api/v2/jobs/{job_id}").json()
    output_id = job["outputs"][0]["id"]
    content = alice.get(f"/api/v2/assets/{output_id}/content")
    assert Image.open(io.BytesIO(content.content)).size == (64, 64)

    for refused in (
        bob.get(f"/api/v2/jobs/{job_id}"),
        bob.get(f"/api/v2/jobs/{job_id}/workflow"),
        bob.get(f"/api/v2/jobs/{job_id}/events"),
        bob.post(f"/api/v2/jobs/{job_id}/cancel"),
        bob.get(f"/api/v2/assets/{output_id}"),
        bob.get(f"/api/v2/assets/{output_id}/content"),
    ):
        assert refused.status_code == 404, refused.text
        assert refused.json()["error"]["code"] == "not_found"
        assert "alice" not in refused.text
    assert job_id not in [j["id"] for j in bob.get("/api/v2/jobs").json()["jobs"]]
    assert job_id in [j["id"] for j in alice.get("/api/v2/jobs").json()["jobs"]]
    assert job_id in [j["id"] for j in admin.get("/api/v2/jobs").json()["jobs"]]
    assert admin.get(f"/api/v2/jobs/{job_id}").json()["status"] == "succeeded"
    # An output of alice's is no asset bob's workflow may reference.
    reference = {"__type": "core/ASSET", "info": {"id": output_id}}
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": reference}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
    }
    missing = bob.post("/api/v2/jobs", json={"workflow": graph})
    assert missing.status_code == 422
    assert missing.json()["error"]["details"] == {"missing_ids": [output_id]}


def test_v2_cancel_reaches_only_the_keys_own_job(
    gateway: Gateway, alice: httpx.Client, bob: httpx.Client, admin: httpx.Client
) -> None:
    job_id = alice.post("/api/v2/jobs", json={"workflow": slow_graph(seed=404)}).json()["id"]
    wait_for_comfy_queue(gateway, running=1)
    assert bob.post(f"/api/v2/jobs/{job_id}/cancel").status_code == 404
    assert alice.get(f"/api/v2/jobs/{job_id}").json()["status"] == "running"
    cancelled = admin.post(f"/api/v2/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200
    eventually(lambda: alice.get(f"/api/v2/jobs/{job_id}").json()["status"] == "canceled")


def multipart_png(name: str, color: tuple[int, int, int]) -> dict[str, Any]:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(out, "PNG")
    return {"files": {"file": (name, out.getvalue(), "image/png")}, "data": {"file_path": name}}


def test_v2_assets_are_each_keys_own(alice: httpx.Client, bob: httpx.Client) -> None:
    name = f"tenant-{uuid.uuid4().hex[:6]}.png"
    uploaded = alice.post("/api/v2/assets", **multipart_png(name, (1, 2, 3)))
    assert uploaded.status_code == 201, uploaded.text
    asset = uploaded.json()
    assert bob.get(f"/api/v2/assets/{asset['id']}").status_code == 404
    assert bob.delete(f"/api/v2/assets/{asset['id']}").status_code == 404
    assert bob.head(f"/api/v2/assets/by-hash/{asset['hash']}").status_code == 404
    assert bob.post("/api/v2/assets/from-hash", json={"hash": asset["hash"]}).status_code == 404
    # The same bytes are a new asset of bob's, not alice's: no key learns what another uploaded.
    his = bob.post("/api/v2/assets", **multipart_png(name, (1, 2, 3)))
    assert his.status_code == 201 and his.json()["id"] != asset["id"]
    assert alice.head(f"/api/v2/assets/by-hash/{asset['hash']}").status_code == 200


# --- /api/v1 ------------------------------------------------------------------------------------


def test_v1_results_and_the_last_prompt_are_each_keys_own(
    alice: httpx.Client, bob: httpx.Client, admin: httpx.Client
) -> None:
    prompt = empty_image(0x778899, prefix=f"v1-{uuid.uuid4().hex[:6]}")
    first = alice.post("/api/v1/prompts", json=prompt)
    assert first.status_code == 200, first.text
    digest = first.headers["digest"].removeprefix("SHA256=")
    assert "fwd=miss" in first.headers["cache-status"]
    assert alice.get(f"/api/v1/images/{digest}").status_code == 200
    assert bob.get(f"/api/v1/images/{digest}").status_code == 404
    assert bob.get("/api/v1/prompts").status_code == 404  # bob sent none: not alice's
    assert alice.get("/api/v1/prompts").json() == prompt
    # The result cache is each key's: the same graph from bob runs, and never hits alice's.
    again = alice.post("/api/v1/prompts", json=prompt)
    assert "hit" in again.headers["cache-status"].split(";")[1]
    his = bob.post("/api/v1/prompts", json=prompt)
    assert his.status_code == 200
    assert his.headers["digest"] == first.headers["digest"]
    assert "fwd=miss" in his.headers["cache-status"]
    assert bob.get("/api/v1/prompts").json() == prompt
    assert admin.get("/api/v1/prompts").status_code == 200  # ComfyUI's last, as without keys
