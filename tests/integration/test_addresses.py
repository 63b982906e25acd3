"""The URLs a request names for its outputs (webhook, webhook_v2, http_upload) against a gateway
with default settings: loopback, however spelled, is a located 400 before anything runs.

Every URL here aims at loopback traps (receivers on one port at 127.0.0.1, 127.0.0.2 and ::1)
that count any connection: a refusal that came too late, or not at all, would show there. The
other private ranges are checked by tests/unit/test_addresses.py, which sends nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.harness import Gateway
from tests.integration.receiver import Receiver, loopback_traps
from tests.integration.test_prompt import empty_image

# How a URL may spell loopback, and what the refusal names (the address getaddrinfo gives).
SPELLINGS = {
    "127.0.0.1": "127.0.0.1",
    "127.0.0.2": "127.0.0.2",
    "localhost": "localhost",  # resolved to 127.0.0.1 here; ::1 comes first on some hosts
    "[::1]": "::1",
    "0.0.0.0": "0.0.0.0",
    "2130706433": "127.0.0.1",
    "0x7f000001": "127.0.0.1",
    "[::ffff:127.0.0.1]": "127.0.0.1",  # named ::ffff:127.0.0.1: contains 127.0.0.1
    "127.1": "127.0.0.1",
}


@pytest.fixture(scope="module")
def traps() -> Iterator[list[Receiver]]:
    made = loopback_traps()
    yield made
    for receiver in made:
        receiver.close()


def destination(field: str, url: str) -> dict[str, Any]:
    if field == "http_upload.url_prefix":
        return {"http_upload": {"url_prefix": url}}
    return {field: url}


def comfy_history(gateway: Gateway) -> int:
    return len(httpx.get(f"{gateway.comfy_url}/history", timeout=10).json())


def assert_refused_before_running(
    response: httpx.Response, gateway: Gateway, traps: list[Receiver], location: str, address: str
) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["location"] == location
    assert body["error"].startswith(f"{location}: ")
    assert address in body["error"]
    assert "ALLOWED_PRIVATE_NETWORKS" in body["error"]
    assert [t.connections for t in traps] == [0, 0, 0]


@pytest.mark.parametrize("field", ["webhook", "webhook_v2", "http_upload.url_prefix"])
@pytest.mark.parametrize("host", list(SPELLINGS))
def test_loopback_output_urls_are_refused_before_anything_runs(
    shared_gateway: Gateway, traps: list[Receiver], host: str, field: str
) -> None:
    job_id = f"refused-{uuid.uuid4().hex[:8]}"
    url = f"http://{host}:{traps[0].port}/internal-admin?delete=all"
    if field == "http_upload.url_prefix":
        url = f"http://{host}:{traps[0].port}/store/"
    ran_before = comfy_history(shared_gateway)
    with shared_gateway.client() as client:
        body = {"prompt": empty_image(0x123456), "id": job_id, **destination(field, url)}
        response = client.post("/prompt", json=body)
        assert_refused_before_running(response, shared_gateway, traps, field, SPELLINGS[host])
        # No job was made (so no task exists that could deliver later), and ComfyUI got nothing.
        assert client.get(f"/prompt/{job_id}").status_code == 404
    assert comfy_history(shared_gateway) == ran_before


def test_workflow_routes_refuse_them_too(shared_gateway: Gateway, traps: list[Receiver]) -> None:
    ran_before = comfy_history(shared_gateway)
    body = {
        "input": {"prompt": "a cat", "width": 64, "height": 64, "steps": 1},
        "webhook_v2": traps[0].url("/hook"),
    }
    with shared_gateway.client() as client:
        response = client.post("/workflows/sd15/txt2img", json=body)
    assert_refused_before_running(response, shared_gateway, traps, "webhook_v2", "127.0.0.1")
    assert comfy_history(shared_gateway) == ran_before
