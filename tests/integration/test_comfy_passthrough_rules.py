"""COMFY_PASSTHROUGH=true (the shared gateway's default) against a real ComfyUI.

What a client needs to run its own prompts is forwarded and answers as ComfyUI does; every admin
endpoint, and any interrupt or delete of a prompt it did not submit through /comfy, is 403 and
changes nothing in ComfyUI, the gateway's own queued and running jobs included.
"""

from __future__ import annotations

import io
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.integration.harness import COMFY_HOME, Gateway, eventually
from tests.integration.test_compat_comfy import png
from tests.integration.test_prompt import (
    post,
    slow_graph,
    wait_for_comfy_queue,
    wait_for_status,
)


def comfy_queue(gateway: Gateway) -> tuple[list[str], list[str]]:
    """The prompt ids ComfyUI itself has running and pending."""
    queue = httpx.get(f"{gateway.comfy_url}/queue", timeout=5).json()
    return [i[1] for i in queue["queue_running"]], [i[1] for i in queue["queue_pending"]]


def assert_forbidden(response: httpx.Response, endpoint: str) -> None:
    assert response.status_code == 403, response.text
    body = response.json()
    assert set(body) <= {"error", "code", "location", "details"}
    assert body["code"] == "forbidden"
    assert endpoint in body["error"]
    assert "COMFY_PASSTHROUGH=full" in body["error"]


def submit(client: httpx.Client, prompt: dict[str, Any], **extra: Any) -> str:
    answer = client.post("/comfy/prompt", json={"prompt": prompt, **extra})
    assert answer.status_code == 200, answer.text
    prompt_id: str = answer.json()["prompt_id"]
    return prompt_id


def test_admin_endpoints_are_refused_and_change_nothing(
    gateway: Gateway, client: httpx.Client
) -> None:
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(post, gateway, slow_graph(seed=11), "rules-run")
        wait_for_status(client, "rules-run", "running")
        queued = pool.submit(post, gateway, slow_graph(seed=12), "rules-queued")
        wait_for_status(client, "rules-queued", "queued")
        # The gateway's prompt ids, as any client reads them from ComfyUI's queue.
        (job,), (waiting,) = comfy_queue(gateway)
        history = client.get("/comfy/history").json()
        user_file = f"rules-{uuid.uuid4().hex[:8]}.json"
        try:
            refused = [
                ("POST", "/comfy/queue", {"clear": True}, "POST /queue"),
                ("POST", "/comfy/api/queue", {"clear": True}, "POST /api/queue"),
                ("POST", "/comfy/%71ueue", {"clear": True}, "POST /%71ueue"),
                ("POST", "/comfy/queue", {"delete": [waiting]}, "POST /queue"),
                ("POST", "/comfy/interrupt", None, "POST /interrupt"),
                ("POST", "/comfy/interrupt", {}, "POST /interrupt"),
                ("POST", "/comfy/interrupt", {"prompt_id": job}, "POST /interrupt"),
                ("POST", f"/comfy/api/jobs/{job}/cancel", None, f"POST /api/jobs/{job}/cancel"),
                ("POST", "/comfy/api/jobs/cancel", {"job_ids": [waiting]}, "/api/jobs/cancel"),
                ("POST", "/comfy/history", {"clear": True}, "POST /history"),
                ("POST", "/comfy/free", {"unload_models": True}, "POST /free"),
                ("POST", f"/comfy/userdata/{user_file}", {"x": 1}, f"/userdata/{user_file}"),
                ("DELETE", f"/comfy/userdata/{user_file}", None, f"/userdata/{user_file}"),
                ("GET", "/comfy/userdata?dir=workflows", None, "GET /userdata"),
                ("POST", "/comfy/users", {"username": "x"}, "POST /users"),
                ("POST", "/comfy/settings", {"Comfy.Locale": "fr"}, "POST /settings"),
                ("GET", "/comfy/internal/logs", None, "GET /internal/logs"),
                ("GET", "/comfy/manager/queue/status", None, "GET /manager/queue/status"),
                ("GET", "/comfy/", None, "GET /"),
            ]
            for method, path, body, endpoint in refused:
                assert_forbidden(client.request(method, path, json=body), endpoint)
            # A client may choose its prompt's id, but not the gateway's queued job's: that
            # would file its prompt over the job's history and outputs.
            taken = client.post(
                "/comfy/prompt", json={"prompt": slow_graph(seed=13), "prompt_id": waiting}
            )
            assert taken.status_code == 409, taken.text
            assert taken.json()["location"] == "prompt_id"

            # Nothing changed: the gateway's jobs still run and wait, the history is whole.
            assert comfy_queue(gateway) == ([job], [waiting])
            assert not running.done() and not queued.done()
            assert client.get("/comfy/history").json().keys() == history.keys()
            assert not (COMFY_HOME / "user" / "default" / user_file).exists()
        finally:
            client.post("/interrupt", json={"id": "rules-queued"})
            client.post("/interrupt", json={"id": "rules-run"})
        assert running.result(timeout=30).json()["code"] == "interrupted"
        assert queued.result(timeout=30).json()["code"] == "interrupted"
    wait_for_comfy_queue(gateway, running=0)


def test_a_client_interrupts_deletes_and_cancels_its_own_prompts(
    gateway: Gateway, client: httpx.Client
) -> None:
    first = submit(client, slow_graph(seed=21))
    eventually(lambda: comfy_queue(gateway)[0] == [first], what="the prompt to run")
    second = submit(client, slow_graph(seed=22))
    third = submit(client, slow_graph(seed=23))
    try:
        assert comfy_queue(gateway) == ([first], [second, third])

        deleted = client.post("/comfy/queue", json={"delete": [second]})
        assert deleted.status_code == 200, deleted.text
        assert comfy_queue(gateway) == ([first], [third])

        cancelled = client.post(f"/comfy/api/jobs/{third}/cancel")
        if httpx.get(f"{gateway.comfy_url}/api/jobs").status_code == 200:  # ComfyUI 0.33+
            assert cancelled.json() == {"cancelled": True}
            assert comfy_queue(gateway) == ([first], [])
        else:  # forwarded all the same; ComfyUI answers that it has no such route
            direct = httpx.post(f"{gateway.comfy_url}/api/jobs/{third}/cancel")
            assert cancelled.status_code == direct.status_code != 403
            assert client.post("/comfy/queue", json={"delete": [third]}).status_code == 200

        interrupted = client.post("/comfy/api/interrupt", json={"prompt_id": first})
        assert interrupted.status_code == 200, interrupted.text
        wait_for_comfy_queue(gateway, running=0)
        status = client.get(f"/comfy/history/{first}").json()[first]["status"]
        assert any(kind == "execution_interrupted" for kind, _ in status["messages"])
    finally:  # straight to ComfyUI, so that a failure leaves no prompt running for minutes
        httpx.post(f"{gateway.comfy_url}/queue", json={"delete": [second, third]})
        httpx.post(f"{gateway.comfy_url}/interrupt", json={"prompt_id": first})
        wait_for_comfy_queue(gateway, running=0)


@pytest.mark.parametrize(
    "path",
    [
        "/prompt", "/queue", "/history", "/history?max_items=1", "/history/no-such-prompt",
        "/view?filename=in64.png&type=input", "/object_info", "/object_info/KSampler",
        "/object_info/Load%20Image", "/system_stats", "/models", "/models/checkpoints",
        "/embeddings", "/extensions", "/features", "/api/jobs", "/api/jobs/no-such-job",
        "/api/object_info/KSampler", "/api/system_stats",
    ],
)  # fmt: skip
def test_what_a_client_reads_answers_as_comfyui_does(
    gateway: Gateway, client: httpx.Client, path: str
) -> None:
    through = client.get(f"/comfy{path}")
    direct = httpx.get(f"{gateway.comfy_url}{path}", timeout=30)
    assert through.status_code == direct.status_code != 403
    if path.startswith(("/object_info", "/view", "/models", "/embeddings", "/extensions")):
        assert through.content == direct.content  # listings that a run cannot change meanwhile


@pytest.mark.parametrize("kind", ["image", "mask"])
def test_uploads_are_forwarded(gateway: Gateway, client: httpx.Client, kind: str) -> None:
    name = f"rules-{kind}-{uuid.uuid4().hex[:8]}.png"
    form = {"overwrite": "true"}
    if kind == "mask":
        form["original_ref"] = json.dumps({"filename": "in64.png", "type": "input"})
    answer = client.post(
        f"/comfy/upload/{kind}",
        files={"image": (name, io.BytesIO(png(64, 64)), "image/png")},
        data=form,
    )
    try:
        assert answer.status_code == 200, answer.text
        assert answer.json()["name"] == name
        assert (gateway.input_dir / name).exists()
    finally:
        (gateway.input_dir / name).unlink(missing_ok=True)
