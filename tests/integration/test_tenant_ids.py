"""A prompt id and a websocket's clientId belong to the first key that used them (issue 20, class
3 and its siblings): key bob cannot file a prompt under key alice's id, a gateway job's or one
ComfyUI already knows, cannot take alice's socket, and hears no event of her prompts.

The tenants' gateway (conftest's `tenant_gateway`: keys alice, bob, admin; API key headers on
websockets too).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.integration.harness import Gateway, assert_capacity_whole, eventually
from tests.integration.tenants import ALICE, BOB, leave_comfyui_idle
from tests.integration.test_prompt import empty_image


@pytest.fixture(scope="module")
def gateway(tenant_gateway: Gateway) -> Gateway:
    return tenant_gateway


@pytest.fixture(autouse=True)
def idle_comfyui(gateway: Gateway) -> Iterator[None]:
    yield
    leave_comfyui_idle(gateway)


def submitted(c: httpx.Client, prefix: str, **extra: Any) -> httpx.Response:
    return c.post("/comfy/prompt", json={"prompt": empty_image(0x202020, prefix=prefix), **extra})


def comfy_history(gateway: Gateway) -> dict[str, Any]:
    history: dict[str, Any] = httpx.get(f"{gateway.comfy_url}/history", timeout=10).json()
    return history


def prompt_with_prefix(gateway: Gateway, prefix: str) -> tuple[str, dict[str, Any]]:
    """The id and extra_data of the prompt in ComfyUI's history that saved under `prefix`."""
    for prompt_id, entry in comfy_history(gateway).items():
        for node in entry["prompt"][2].values():
            if str(node["inputs"].get("filename_prefix", "")).startswith(prefix):
                return prompt_id, entry["prompt"][3]
    raise AssertionError(f"no prompt saved under {prefix}")


def assert_status(response: httpx.Response, status: int, location: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["location"] == location, response.text


def test_a_prompt_id_is_the_first_keys(
    gateway: Gateway, alice: httpx.Client, bob: httpx.Client
) -> None:
    chosen = str(uuid.uuid4())
    hers = submitted(alice, "ids-alice", prompt_id=chosen)
    assert hers.status_code == 200, hers.text
    assert hers.json()["prompt_id"] == chosen
    eventually(lambda: chosen in alice.get(f"/comfy/history/{chosen}").json())

    assert_status(submitted(bob, "ids-bob", prompt_id=chosen), 409, "prompt_id")
    for other_form in (chosen.upper(), chosen.replace("-", ""), f"{{{chosen}}}", 5, ["x"], ""):
        assert_status(submitted(bob, "ids-bob", prompt_id=other_form), 400, "prompt_id")
    # Alice's prompt is still hers, whole: its history, its files.
    entry = alice.get(f"/comfy/history/{chosen}").json()[chosen]
    assert entry["prompt"][2]["2"]["inputs"]["filename_prefix"] == "ids-alice"
    assert bob.get(f"/comfy/history/{chosen}").status_code == 404
    assert alice.post("/comfy/interrupt", json={"prompt_id": chosen}).status_code == 200
    assert bob.post("/comfy/interrupt", json={"prompt_id": chosen}).status_code == 403

    # The ids of jobs the gateway ran (/prompt, the v2 facade), which ComfyUI's history holds.
    job = alice.post("/prompt", json={"prompt": empty_image(1, prefix="ids-job")})
    assert job.status_code == 200, job.text
    v2 = alice.post("/api/v2/jobs", json={"workflow": empty_image(2, prefix="ids-v2")})
    assert v2.status_code == 201, v2.text
    eventually(lambda: alice.get(f"/api/v2/jobs/{v2.json()['id']}").json()["status"] != "running")
    eventually(lambda: any("ids-v2" in json.dumps(e) for e in comfy_history(gateway).values()))
    for prefix in ("ids-job", "ids-v2"):
        taken, _ = prompt_with_prefix(gateway, prefix)
        assert_status(submitted(bob, "ids-bob", prompt_id=taken), 409, "prompt_id")
    # The gateway's own event stream is nobody's client_id.
    gateways = prompt_with_prefix(gateway, "ids-job")[1]["client_id"]
    assert_status(submitted(bob, "ids-bob", client_id=gateways), 409, "client_id")
    assert_capacity_whole(gateway, bob)


def test_a_client_id_and_the_queue_order_are_not_another_keys(
    gateway: Gateway, alice: httpx.Client, bob: httpx.Client
) -> None:
    sid = uuid.uuid4().hex
    assert submitted(alice, "ids-c", client_id=sid).status_code == 200
    assert_status(submitted(bob, "ids-c", client_id=sid), 409, "client_id")
    mixed = submitted(bob, "ids-c", extra_data={"client_id": sid})
    assert_status(mixed, 409, "extra_data.client_id")
    assert_status(submitted(bob, "ids-c", client_id=7), 400, "client_id")
    assert_status(submitted(bob, "ids-c", number=-1), 400, "number")
    assert_status(submitted(bob, "ids-c", front=True), 400, "front")
    assert submitted(bob, "ids-c", front=False).status_code == 200
    assert_capacity_whole(gateway, bob)


def socket(gateway: Gateway, key: str, query: str = "") -> ClientConnection:
    url = f"ws://127.0.0.1:{gateway.port}/comfy/ws{query}"
    return connect(url, additional_headers={"X-API-Key": key}, open_timeout=10)


def heard(ws: ClientConnection, until: str, timeout_s: float = 60) -> list[Any]:
    """The frames a socket got until (and with) the text frame that contains `until`."""
    frames: list[Any] = []
    while True:
        frame = ws.recv(timeout=timeout_s)
        frames.append(frame)
        if isinstance(frame, str) and until in frame:
            return frames


def test_a_socket_is_its_keys_and_hears_only_its_prompts(
    gateway: Gateway, alice: httpx.Client, bob: httpx.Client
) -> None:
    sid, bobs = uuid.uuid4().hex, uuid.uuid4().hex
    with (
        socket(gateway, ALICE, f"?clientId={sid}") as hers,
        socket(gateway, BOB, f"?clientId={bobs}") as his,
    ):
        for query, status in [
            (f"?clientId={sid}", 409),  # ComfyUI would give bob alice's events from now on
            (f"?clientId={sid}&clientId=x", 400),  # ComfyUI reads the first, a check the last
            ("?clientId=%ff", 400),
        ]:
            with pytest.raises(InvalidStatus) as refused:
                socket(gateway, BOB, query)
            assert refused.value.response.status_code == status
        # A prompt without a client_id: ComfyUI sends its progress to every socket.
        prompt_id = submitted(alice, "ids-ws").json()["prompt_id"]
        heard(hers, prompt_id)
        eventually(lambda: prompt_id in alice.get(f"/comfy/history/{prompt_id}").json())
        # Bob's socket got the queue's size all along, and nothing of alice's prompt (ComfyUI
        # sends a socket its events in order: alice's came before bob's last).
        marker = submitted(bob, "ids-ws-bob", client_id=bobs).json()["prompt_id"]
        frames = heard(his, json.dumps({"node": None, "prompt_id": marker}))
        assert not [f for f in frames if isinstance(f, bytes) or prompt_id in f]
        assert any(json.loads(f)["type"] == "status" for f in frames)
    assert_capacity_whole(gateway, bob)
