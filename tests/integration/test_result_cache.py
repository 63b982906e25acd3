"""POST /prompt with `"cache": true` on a real gateway with RESULT_CACHE_MAX_MB: a request
answered before is answered again without a ComfyUI job; a random graph always runs."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.harness import Gateway, graph
from tests.integration.test_compat_v1 import comfy_prompts
from tests.integration.test_prompt import empty_image


@pytest.fixture
def client(cache_gateway: Gateway) -> Iterator[httpx.Client]:
    with cache_gateway.client() as c:
        yield c


def test_a_repeated_cached_request_runs_no_job_and_gives_the_same_files(
    client: httpx.Client, cache_gateway: Gateway
) -> None:
    prompt = empty_image(0x334455, prefix="cache1")
    started = time.monotonic()
    first = client.post("/prompt", json={"prompt": prompt, "cache": True, "id": "c-1"})
    ran_s = time.monotonic() - started
    assert first.status_code == 200, first.text
    assert first.headers["cache-status"] == "comfy-gateway; fwd=miss; stored"
    ran = comfy_prompts(cache_gateway)
    reordered = {n: dict(reversed(node.items())) for n, node in reversed(prompt.items())}
    started = time.monotonic()
    again = client.post("/prompt", json={"id": "c-2", "cache": True, "prompt": reordered})
    hit_s = time.monotonic() - started
    assert again.status_code == 200, again.text
    assert again.headers["cache-status"] == "comfy-gateway; hit"
    assert comfy_prompts(cache_gateway) == ran
    body, before = again.json(), first.json()
    assert body["id"] == "c-2"
    assert body["images"] == before["images"] and body["filenames"] == before["filenames"]
    assert body["stats"]["queue"] == body["stats"]["execution"] == 0
    assert base64.b64decode(body["images"][0]).startswith(b"\x89PNG")
    # no job ran, so there is none to ask about
    assert client.get("/prompt/c-2").status_code == 404
    print(f"POST /prompt 64x64: ran in {ran_s * 1000:.1f} ms, hit in {hit_s * 1000:.1f} ms")


def test_without_the_flag_or_with_other_options_the_job_runs(
    client: httpx.Client, cache_gateway: Gateway
) -> None:
    prompt = empty_image(0x556677, prefix="cache2")
    assert client.post("/prompt", json={"prompt": prompt, "cache": True}).status_code == 200
    ran = comfy_prompts(cache_gateway)
    plain = client.post("/prompt", json={"prompt": prompt})
    assert plain.status_code == 200 and "cache-status" not in plain.headers
    converted = client.post(
        "/prompt", json={"prompt": prompt, "cache": True, "convert_output": {"format": "jpeg"}}
    )
    assert converted.headers["cache-status"] == "comfy-gateway; fwd=miss; stored"
    assert converted.json()["filenames"][0].endswith(".jpeg")
    assert comfy_prompts(cache_gateway) == ran + 2


def test_a_random_graph_always_runs(client: httpx.Client, cache_gateway: Gateway) -> None:
    prompt = graph("t2i")
    prompt["5"]["inputs"]["control_after_generate"] = "randomize"
    ran = comfy_prompts(cache_gateway)
    for _ in range(2):
        response = client.post("/prompt", json={"prompt": prompt, "cache": True})
        assert response.status_code == 200, response.text
        assert response.headers["cache-status"] == "comfy-gateway; fwd=bypass; detail=random"
    assert comfy_prompts(cache_gateway) == ran + 2


def test_a_graph_that_reads_an_input_file_is_cached_only_when_asked(
    client: httpx.Client, cache_gateway: Gateway
) -> None:
    prompt = graph("g2_load_scale_invert_save")
    prompt["4"]["inputs"]["filename_prefix"] = "cache3"
    plain = client.post("/prompt", json={"prompt": prompt, "cache": True})
    assert plain.headers["cache-status"] == "comfy-gateway; fwd=bypass; detail=external"
    asked = {"prompt": prompt, "cache": True, "cache_external_inputs": True}
    assert client.post("/prompt", json=asked).headers["cache-status"].endswith("stored")
    ran = comfy_prompts(cache_gateway)
    assert client.post("/prompt", json=asked).headers["cache-status"] == "comfy-gateway; hit"
    assert comfy_prompts(cache_gateway) == ran


def test_an_event_stream_request_runs_the_job_even_when_cached(
    client: httpx.Client, cache_gateway: Gateway
) -> None:
    body = {"prompt": empty_image(0x0A0B0C, prefix="cache4"), "cache": True}
    assert client.post("/prompt", json=body).status_code == 200
    ran = comfy_prompts(cache_gateway)
    stream = client.post("/prompt", json=body, headers={"Accept": "text/event-stream"})
    assert stream.status_code == 200 and "event: complete" in stream.text
    assert comfy_prompts(cache_gateway) == ran + 1
