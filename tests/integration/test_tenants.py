"""Keys as tenants on a real gateway and ComfyUI: a job is its key's (status, events, interrupt,
the passthrough's queue, history and view), ids are per key, an admin key sees all, the rate
and job limits answer 429 and recover, and input caps stop a bomb before ComfyUI.

One gateway (conftest's `tenant_gateway`): keys alice, bob, metered, solo and the admin key ops;
KEY_LIMITS, MAX_INPUT_PIXELS=2048x2048, INPUT_MAX_MB=1 (tests.integration.tenants).
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.images import bomb_png
from tests.integration.harness import Gateway, eventually
from tests.integration.receiver import Receiver
from tests.integration.tenants import (
    ALICE,
    MAX_INPUT_PIXELS,
    METERED,
    SECRETS,
    SOLO,
    client,
    leave_comfyui_idle,
)
from tests.integration.test_prompt import empty_image, slow_graph, wait_for_comfy_queue


@pytest.fixture(scope="module")
def gateway(tenant_gateway: Gateway) -> Gateway:
    return tenant_gateway


@pytest.fixture(autouse=True)
def idle_comfyui(gateway: Gateway) -> Iterator[None]:
    """Each test leaves ComfyUI idle, whatever it left running."""
    yield
    leave_comfyui_idle(gateway)


def assert_not_found(response: httpx.Response) -> None:
    """A 404 in the gateway's shape that names no key, nor any key's name."""
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "not_found"
    for secret in (*SECRETS, "alice", "key-"):
        assert secret not in response.text


def status_of(c: httpx.Client, request_id: str, **params: str) -> str:
    answer = c.get(f"/prompt/{request_id}", params=params)
    assert answer.status_code == 200, answer.text
    status: str = answer.json()["status"]
    return status


# --- a job is its key's ------------------------------------------------------------------------


def test_another_keys_job_is_a_404_and_its_id_is_free_for_both(
    gateway: Gateway,
    alice: httpx.Client,
    bob: httpx.Client,
    admin: httpx.Client,
    receiver: Receiver,
) -> None:
    order = f"order-{uuid.uuid4().hex[:6]}"  # a guessable id, as clients choose them
    body = {"prompt": slow_graph(seed=101), "id": order, "webhook_v2": receiver.url("/alice")}
    assert alice.post("/prompt", json=body).status_code == 202
    eventually(lambda: status_of(alice, order) == "running", what="alice's job to run")

    unknown = bob.get("/prompt/no-such-order")
    for refused in (
        bob.get(f"/prompt/{order}"),
        bob.get(f"/prompt/{order}/events"),
        bob.post("/interrupt", json={"id": order}),
        bob.post("/interrupt", json={"id": order, "owner": "alice"}),  # `owner` is admin-only
        bob.get(f"/prompt/{order}", params={"owner": "alice"}),
    ):
        assert_not_found(refused)
    # The same answer as for an id nobody used: no oracle.
    theirs = bob.get(f"/prompt/{order}").json()
    assert theirs == json.loads(unknown.text.replace("no-such-order", order))
    assert status_of(alice, order) == "running", "bob's interrupt reached alice's job"
    assert gateway.log_text().count(f"job {order} of key alice: submitting") == 1
    health = httpx.get(f"{gateway.url}/health").json()
    assert health["instances"][0]["jobs"] == ["hidden"]  # /health is open: no tenant's ids

    # Bob's own order with the same id is queued beside alice's (one ComfyUI: behind it).
    queued = {"prompt": empty_image(0x00FF00), "id": order, "webhook_v2": receiver.url("/bob")}
    assert bob.post("/prompt", json=queued).status_code == 202
    assert status_of(bob, order) == "queued"
    assert status_of(alice, order) == "running"
    assert alice.get(f"/prompt/{order}").json()["owner"] is None  # only admins see owners

    # The admin key sees both, by naming whose.
    ambiguous = admin.get(f"/prompt/{order}")
    assert ambiguous.status_code == 409
    assert ambiguous.json()["location"] == "owner"
    hers = admin.get(f"/prompt/{order}", params={"owner": "alice"}).json()
    his = admin.get(f"/prompt/{order}", params={"owner": "bob"}).json()
    assert (hers["status"], hers["owner"]) == ("running", "alice")
    assert (his["status"], his["owner"]) == ("queued", "bob")

    # ...and cancels alice's; bob's then runs.
    cancelled = admin.post("/interrupt", json={"id": order, "owner": "alice"})
    assert cancelled.status_code == 200, cancelled.text
    (delivery,) = receiver.wait_for("/alice", 1)
    assert delivery.json()["code"] == "interrupted"
    assert delivery.json()["metadata"] == {"key_name": "alice"}
    assert status_of(alice, order) == "interrupted"
    (done,) = receiver.wait_for("/bob", 1)
    assert (done.json()["type"], done.json()["id"]) == ("prompt.complete", order)
    assert done.json()["metadata"] == {"key_name": "bob"}
    assert status_of(bob, order) == "succeeded"
    his = admin.get(f"/prompt/{order}", params={"owner": "bob"}).json()
    assert his["result"]["images"] == done.json()["images"]
    events = alice.get(f"/prompt/{order}/events")
    assert events.status_code == 200
    assert events.text.rstrip().splitlines()[-2] == "event: failed"
    assert bob.get(f"/prompt/{order}/events").text.rstrip().splitlines()[-2] == "event: complete"


def test_an_admin_key_sees_a_job_of_any_key_by_its_id(
    alice: httpx.Client, bob: httpx.Client, admin: httpx.Client
) -> None:
    request_id = f"only-{uuid.uuid4().hex[:6]}"
    assert bob.post("/prompt", json={"prompt": empty_image(9), "id": request_id}).status_code == 200
    seen = admin.get(f"/prompt/{request_id}")
    assert seen.status_code == 200
    assert (seen.json()["status"], seen.json()["owner"]) == ("succeeded", "bob")
    assert_not_found(alice.get(f"/prompt/{request_id}"))


# --- the passthrough ----------------------------------------------------------------------------


def first_output(entry: dict[str, Any]) -> dict[str, str]:
    for node in entry["outputs"].values():
        for image in node.get("images", []):
            return {k: image[k] for k in ("filename", "subfolder", "type")}
    raise AssertionError(f"no image in {entry}")


def test_passthrough_history_and_view_are_each_keys_own(
    alice: httpx.Client, bob: httpx.Client, admin: httpx.Client
) -> None:
    prefix = f"tenant-{uuid.uuid4().hex[:6]}"
    answer = alice.post("/comfy/prompt", json={"prompt": empty_image(0x123456, prefix=prefix)})
    assert answer.status_code == 200, answer.text
    prompt_id = answer.json()["prompt_id"]
    eventually(lambda: prompt_id in alice.get(f"/comfy/history/{prompt_id}").json())
    entry = alice.get(f"/comfy/history/{prompt_id}").json()[prompt_id]
    view = first_output(entry)
    assert view["filename"].startswith(prefix)
    seen = alice.get("/comfy/view", params=view)
    assert seen.status_code == 200
    assert Image.open(io.BytesIO(seen.content)).size == (64, 64)

    for path in (f"/comfy/history/{prompt_id}", f"/comfy/api/history/{prompt_id}"):
        assert_not_found(bob.get(path))
    assert_not_found(bob.get("/comfy/view", params=view))
    assert_not_found(bob.get("/comfy/view", params={**view, "filename": "nothing.png"}))
    assert prompt_id not in bob.get("/comfy/history").json()
    assert prompt_id in alice.get("/comfy/history").json()
    assert list(alice.get("/comfy/history", params={"max_items": 1}).json()) == [prompt_id]
    assert admin.get(f"/comfy/history/{prompt_id}").json()[prompt_id]["outputs"]
    assert admin.get("/comfy/view", params=view).content == seen.content

    jobs_api = admin.get("/comfy/api/jobs").status_code == 200  # ComfyUI 0.33+
    if jobs_api:
        assert_not_found(bob.get(f"/comfy/api/jobs/{prompt_id}"))
        assert alice.get(f"/comfy/api/jobs/{prompt_id}").json()["id"] == prompt_id
        listed = bob.get("/comfy/api/jobs").json()
        assert prompt_id not in [job["id"] for job in listed["jobs"]]
        mine = alice.get("/comfy/api/jobs", params={"limit": 1}).json()
        assert [job["id"] for job in mine["jobs"]] == [prompt_id]
        assert mine["pagination"]["total"] >= 1


def test_passthrough_queue_and_interrupt_are_each_keys_own(
    gateway: Gateway, alice: httpx.Client, bob: httpx.Client
) -> None:
    answer = alice.post("/comfy/prompt", json={"prompt": slow_graph(seed=202)})
    prompt_id = answer.json()["prompt_id"]
    wait_for_comfy_queue(gateway, running=1)
    running = alice.get("/comfy/queue").json()["queue_running"]
    assert [item[1] for item in running] == [prompt_id]
    assert bob.get("/comfy/queue").json() == {"queue_running": [], "queue_pending": []}

    # Acting on alice's prompt: the 403 any prompt bob did not send gets.
    nobody = str(uuid.uuid4())
    theirs = bob.post("/comfy/interrupt", json={"prompt_id": prompt_id})
    nobodys = bob.post("/comfy/interrupt", json={"prompt_id": nobody})
    assert theirs.status_code == nobodys.status_code == 403
    assert theirs.json() == json.loads(nobodys.text.replace(nobody, prompt_id))
    assert bob.post("/comfy/queue", json={"delete": [prompt_id]}).status_code == 403
    assert len(alice.get("/comfy/queue").json()["queue_running"]) == 1

    assert alice.post("/comfy/interrupt", json={"prompt_id": prompt_id}).status_code == 200
    wait_for_comfy_queue(gateway, running=0)


# --- limits ------------------------------------------------------------------------------------


def scrape(gateway: Gateway) -> str:
    return httpx.get(f"{gateway.url}/metrics", timeout=10).text


def sample(text: str, line_start: str) -> float:
    found = [line for line in text.splitlines() if line.startswith(line_start)]
    return float(found[0].rsplit(" ", 1)[1]) if found else 0.0


def test_a_rate_limit_gives_429_with_retry_after_and_recovers(gateway: Gateway) -> None:
    limited_series = 'comfy_gateway_key_limited_total{key="metered",limit="requests_per_minute"}'
    before = sample(scrape(gateway), limited_series)
    with client(gateway, METERED) as c:
        started = time.monotonic()
        answers: list[httpx.Response] = []
        while len(answers) < 20 and (not answers or answers[-1].status_code != 429):
            answers.append(c.get("/prompt/nothing-here"))
        elapsed_s = time.monotonic() - started
        allowed = len(answers) - 1
        assert answers[-1].status_code == 429, [a.status_code for a in answers]
        assert 5 <= allowed <= 5 + elapsed_s + 1  # the burst, and what refilled meanwhile
        refused = answers[-1]
        retry_s = int(refused.headers["retry-after"])
        assert retry_s == 1
        body = refused.json()
        assert body["code"] == "rate_limited"
        assert body["details"]["limit"] == "requests_per_minute"
        assert "60 per minute" in body["error"]
        for secret in (*SECRETS, "metered"):
            assert secret not in refused.text
        time.sleep(retry_s)
        assert c.get("/prompt/nothing-here").status_code == 404  # recovered
    with client(gateway, ALICE) as c:
        assert all(c.get("/prompt/nothing-here").status_code == 404 for _ in range(10))
    assert sample(scrape(gateway), limited_series) == before + 1


def test_a_job_quota_gives_429_with_retry_after_and_recovers(
    gateway: Gateway, receiver: Receiver
) -> None:
    with client(gateway, SOLO) as c:
        first = {
            "prompt": slow_graph(seed=303),
            "id": "solo-1",
            "webhook_v2": receiver.url("/solo"),
        }
        assert c.post("/prompt", json=first).status_code == 202
        refusals = [
            c.post("/prompt", json={"prompt": empty_image(1)}),
            c.post("/comfy/prompt", json={"prompt": empty_image(2)}),  # the passthrough too
            c.post("/api/v2/jobs", json={"workflow": empty_image(3)}),
        ]
        for refused in refusals:
            assert refused.status_code == 429, refused.text
            assert refused.headers["retry-after"] == "5"
        assert refusals[0].json()["code"] == "too_many_jobs"
        assert refusals[0].json()["details"] == {"limit": "max_jobs", "max_jobs": 1}
        assert refusals[1].json()["code"] == "too_many_jobs"
        assert refusals[2].json()["error"]["code"] == "too_many_jobs"  # the v2 envelope
        assert c.post("/interrupt", json={"id": "solo-1"}).status_code == 200
        receiver.wait_for("/solo", 1)
        again = c.post("/prompt", json={"prompt": empty_image(4)})
        assert again.status_code == 200, again.text  # recovered once the job ended
    metrics = scrape(gateway)
    assert sample(metrics, 'comfy_gateway_key_limited_total{key="solo",limit="max_jobs"}') == 3
    assert sample(metrics, 'comfy_gateway_key_jobs_total{key="solo",outcome="interrupted"}') == 1
    assert sample(metrics, 'comfy_gateway_key_jobs_total{key="solo",outcome="succeeded"}') >= 1
    assert sample(metrics, 'comfy_gateway_key_active_jobs{key="solo"}') == 0


# --- input caps ---------------------------------------------------------------------------------


def noise_png(size: int = 700) -> bytes:
    """A PNG of random pixels: about 1.4 MB, over the gateway's INPUT_MAX_MB=1."""
    image = Image.frombytes("RGB", (size, size), os.urandom(size * size * 3))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def load_graph(image: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "cap"}},
    }


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def multipart(field: str, name: str, data: bytes, **fields: str) -> dict[str, Any]:
    return {"files": {field: (name, data, "image/png")}, "data": fields}


def test_a_bomb_and_an_oversized_file_are_located_400s_that_never_reach_comfyui(
    gateway: Gateway, alice: httpx.Client
) -> None:
    bomb, big = bomb_png(), noise_png()
    assert len(bomb) < 64 * 1024 and len(big) > 2**20
    comfy_history = httpx.get(f"{gateway.comfy_url}/history", timeout=10).json()
    inputs = files_under(gateway.input_dir)
    b64 = {name: base64.b64encode(data).decode() for name, data in (("bomb", bomb), ("big", big))}
    v1_form = {"prompt": (None, json.dumps(load_graph("bomb.png")), "application/json")}
    cases = [
        (alice.post("/prompt", json={"prompt": load_graph(b64["bomb"])}),
         "prompt.1.inputs.image", "MAX_INPUT_PIXELS"),
        (alice.post("/prompt", json={"prompt": load_graph(b64["big"])}),
         "prompt.1.inputs.image", "INPUT_MAX_MB"),
        (alice.post("/prompt", json={"prompt": load_graph(f"data:image/png;base64,{b64['bomb']}")}),
         "prompt.1.inputs.image", "MAX_INPUT_PIXELS"),
        (alice.post("/api/v1/prompts", files={**v1_form, "bomb": ("bomb.png", bomb, "image/png")}),
         "files.bomb.png", "MAX_INPUT_PIXELS"),
        (alice.post("/comfy/upload/image", **multipart("image", "bomb.png", bomb)),
         "image", "MAX_INPUT_PIXELS"),
        (alice.post("/comfy/upload/image", **multipart("image", "big.png", big)),
         "image", "INPUT_MAX_MB"),
        (alice.post("/sdapi/v1/img2img", json={"init_images": [b64["bomb"]], "steps": 1}),
         "init_images.0", "MAX_INPUT_PIXELS"),
    ]  # fmt: skip
    for response, location, limit in cases:
        assert response.status_code == 400, response.text
        body = response.json()
        assert (body["code"], body["location"]) == ("invalid_input", location), body
        assert body["details"]["limit"] == limit
        assert limit in body["error"]
    v2 = alice.post("/api/v2/assets", **multipart("file", "bomb.png", bomb, file_path="bomb.png"))
    assert v2.status_code == 400, v2.text
    error = v2.json()["error"]
    assert error["details"]["location"] == "file"
    assert error["details"]["max_pixels"] == MAX_INPUT_PIXELS
    # Nothing reached ComfyUI: no prompt in its history, no file in its input folder.
    assert httpx.get(f"{gateway.comfy_url}/history", timeout=10).json() == comfy_history
    assert files_under(gateway.input_dir) == inputs
    # A 2048x2048 image, at the cap, goes through.
    fits = Image.new("L", (2048, 2048))
    out = io.BytesIO()
    fits.save(out, "PNG")
    ok = alice.post("/comfy/upload/image", **multipart("image", "fits.png", out.getvalue()))
    assert ok.status_code == 200, ok.text


# --- logs and metrics ---------------------------------------------------------------------------


def test_logs_and_metrics_name_keys_and_never_show_them(
    gateway: Gateway, alice: httpx.Client
) -> None:
    request_id = f"logged-{uuid.uuid4().hex[:6]}"
    assert (
        alice.post("/prompt", json={"prompt": empty_image(5), "id": request_id}).status_code == 200
    )
    entries = [json.loads(line) for line in gateway.log_text().splitlines() if line.startswith("{")]
    about = [e for e in entries if e.get("request_id") == request_id]
    assert about and all(e.get("key") == "alice" for e in about), about
    metrics = scrape(gateway)
    assert sample(metrics, 'comfy_gateway_key_jobs_total{key="alice",outcome="succeeded"}') >= 1
    assert sample(metrics, 'comfy_gateway_key_requests_total{key="alice",status="200"}') >= 1
    for secret in SECRETS:
        assert secret not in gateway.log_text()
        assert secret not in metrics
    assert "key-" not in metrics
