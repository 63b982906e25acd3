"""What is not strict JSON, and odd input, on a real gateway: a located 400 (or the answer the
protocol gives) before anything is taken, on /prompt and every facade; never a 500, and never a
job held afterwards. The tenants' gateway (conftest's `tenant_gateway`): keys, the result cache,
the shipped workflows; the `solo` key may have one job at a time, so a job left held by a refused
request would answer its next request 429.

On main, a graph with NaN, Infinity or a lone surrogate answered 500 and its job stayed active
for good (/ready's queue_depth, the key's max_jobs); deep JSON on /api/v2/jobs and a
Last-Event-ID of `²` answered 500.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.harness import Gateway, assert_capacity_whole, graph
from tests.integration.tenants import SOLO, client

EMPTY_SAVE = json.dumps(graph("g1_empty_save"))


def prompt_with(value: str) -> str:
    """The shared graph's text with a literal JSON value in EmptyImage's color."""
    return EMPTY_SAVE.replace('"color": 16711680', f'"color": {value}')


# Each is not strict JSON; raw text, since Python's json would not write most of them.
VALUES = {
    "nan": "NaN",
    "infinity": "Infinity",
    "-infinity": "-Infinity",
    "overflow": "1e999",
    "surrogate": '"\\ud800"',
    "deep": "[" * 5000 + "]" * 5000,
    "huge-int": "7" * 5000,
}


@pytest.fixture(scope="module")
def gateway(tenant_gateway: Gateway) -> Gateway:
    return tenant_gateway


@pytest.fixture
def solo(gateway: Gateway) -> Iterator[httpx.Client]:
    with client(gateway, SOLO) as c:
        yield c


def post_raw(c: httpx.Client, path: str, body: str) -> httpx.Response:
    return c.post(path, content=body.encode(), headers={"content-type": "application/json"})


def location(response: httpx.Response) -> Any:
    body = response.json()
    if isinstance(body["error"], dict):  # the Comfy API v2's envelope
        return body["error"]["details"]["location"]
    return body["location"]


@pytest.mark.parametrize("cache", [False, True], ids=["", "cache"])
@pytest.mark.parametrize("kind", sorted(VALUES))
def test_not_strict_json_on_prompt_is_a_located_400(
    gateway: Gateway, solo: httpx.Client, kind: str, cache: bool
) -> None:
    extra = ', "cache": true' if cache else ""
    response = post_raw(solo, "/prompt", f'{{"prompt": {prompt_with(VALUES[kind])}{extra}}}')
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_request"
    expected = "body.prompt.1.inputs.color" if kind == "surrogate" else "body"
    assert location(response) == expected, response.text
    assert_capacity_whole(gateway, solo)


def facade_bodies(value: str) -> dict[str, str]:
    """A body for each facade and route that reads JSON, with the value inside."""
    graph_text = prompt_with(value)
    return {
        "/workflows/sd15/txt2img": f'{{"input": {{"prompt": "x", "steps": {value}}}}}',
        "/sdapi/v1/txt2img": f'{{"prompt": "x", "cfg_scale": {value}}}',
        "/api/v2/jobs": f'{{"workflow": {graph_text}}}',
        "/api/v1/prompts": f'{{"prompt": {graph_text}}}',
        "/interrupt": f'{{"id": {value}}}',
    }


@pytest.mark.parametrize("path", sorted(facade_bodies("0")))
def test_not_strict_json_on_every_facade_is_a_located_400(
    gateway: Gateway, solo: httpx.Client, path: str
) -> None:
    for kind, value in VALUES.items():
        response = post_raw(solo, path, facade_bodies(value)[path])
        assert response.status_code == 400, (kind, response.text)
        assert str(location(response)).startswith("body"), (kind, response.text)
    assert_capacity_whole(gateway, solo)


def test_a_multipart_prompt_part_is_strict_json_too(gateway: Gateway, solo: httpx.Client) -> None:
    for kind, value in VALUES.items():
        response = solo.post("/api/v1/prompts", files={"prompt": (None, prompt_with(value))})
        assert response.status_code == 400, (kind, response.text)
        assert str(location(response)).startswith("prompt"), (kind, response.text)
    assert_capacity_whole(gateway, solo)


# --- odd input (class 9) ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [b"\xb2", b"1" * 5000, b"-1", b"\xd9\xa3"], ids=range(4))
def test_an_odd_last_event_id_is_a_located_400(
    gateway: Gateway, solo: httpx.Client, value: bytes
) -> None:
    job_id = f"events-{value[:4].hex()}"
    assert solo.post("/prompt", json={"prompt": graph("g1_empty_save"), "id": job_id}).is_success
    response = solo.get(f"/prompt/{job_id}/events", headers={"Last-Event-ID": value})
    assert response.status_code == 400, response.text
    assert location(response) == "Last-Event-ID"
    assert_capacity_whole(gateway, solo)


def test_an_odd_v2_output_index_is_a_404(gateway: Gateway, solo: httpx.Client) -> None:
    job = solo.post("/api/v2/jobs", json={"workflow": graph("g1_empty_save")})
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    for index in ("²", "1" * 5000, "0" + "0" * 30):
        response = solo.get(f"/api/v2/assets/{job_id}.{index}/content")
        assert response.status_code == 404, (index, response.text)
    assert_capacity_whole(gateway, solo)


@pytest.mark.parametrize(
    "ids",
    [("²", "³"), ("5:3", "a.b"), ("\u0661", "\U0001f680")],
    ids=["superscripts", "dots", "other"],
)
def test_node_ids_comfyui_takes_run(
    gateway: Gateway, solo: httpx.Client, ids: tuple[str, str]
) -> None:
    # Node `³` (its output) made every job 500 while its outputs were read.
    first, second = ids
    text = EMPTY_SAVE.replace('"1"', json.dumps(first)).replace('"2"', json.dumps(second))
    response = post_raw(solo, "/prompt", f'{{"prompt": {text}}}')
    assert response.status_code == 200, response.text
    assert len(response.json()["images"]) == 1
    assert_capacity_whole(gateway, solo)


@pytest.mark.parametrize("node_id", ["", "a\nb", "x" * 129], ids=["empty", "newline", "long"])
def test_odd_node_ids_are_a_located_400(gateway: Gateway, solo: httpx.Client, node_id: str) -> None:
    text = EMPTY_SAVE.replace('"1"', json.dumps(node_id))
    response = post_raw(solo, "/prompt", f'{{"prompt": {text}}}')
    assert response.status_code == 400, response.text
    assert location(response) == "prompt"
    assert_capacity_whole(gateway, solo)


@pytest.mark.parametrize("prefix", ["a\u0000b", "../../x", "/tmp/x", "x" * 300])
def test_a_save_prefix_comfyui_cannot_save_under_is_a_located_400(
    gateway: Gateway, solo: httpx.Client, prefix: str
) -> None:
    # ComfyUI fails such a save as the node runs: a 502 after the job took its turn.
    bad = graph("g1_empty_save")
    bad["2"]["inputs"]["filename_prefix"] = prefix
    response = solo.post("/prompt", json={"prompt": bad})
    assert response.status_code == 400, response.text
    assert location(response) == "prompt.2.inputs.filename_prefix"
    assert_capacity_whole(gateway, solo)


@pytest.mark.parametrize("weight", ["nan", "inf", "1e999"])
def test_an_a1111_lora_weight_that_is_no_number_is_a_400(
    gateway: Gateway, solo: httpx.Client, weight: str
) -> None:
    # A NaN strength reached the graph: httpx could not send it, and on main the job stayed held.
    body = {"prompt": f"x <lora:tiny-lora:{weight}>", "width": 64, "height": 64, "steps": 1}
    response = solo.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 400, response.text
    assert location(response) == "prompt"
    assert_capacity_whole(gateway, solo)
