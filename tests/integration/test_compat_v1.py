"""ComfyUI's blocking API (/api/v1/prompts, /api/v1/images) on a real gateway and ComfyUI, with
the result cache on (RESULT_CACHE_MAX_MB) and room for two jobs (MAX_QUEUE_DEPTH=2)."""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.integration.harness import Gateway, eventually, graph
from tests.integration.test_prompt import empty_image, slow_graph, wait_for_status


@pytest.fixture
def client(cache_gateway: Gateway) -> Iterator[httpx.Client]:
    with cache_gateway.client() as c:
        yield c


def comfy_prompts(gateway: Gateway) -> int:
    """How many prompts ComfyUI's own history holds."""
    return len(httpx.get(f"{gateway.comfy_url}/history", timeout=10).json())


def sha256_of_sorted_json(value: Any) -> str:
    # For graphs of ASCII text and integers, RFC 8785 is json.dumps with sorted keys and no
    # spaces: an independent check of the gateway's canonical form.
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def near(got: Any, want: tuple[int, int, int]) -> bool:
    """Equal but for ComfyUI's float rounding (255 - 200 may come back as 54)."""
    return all(abs(g - w) <= 2 for g, w in zip(got, want, strict=True))


def test_json_answer_has_urls_digest_location_and_the_file_behind_them(
    client: httpx.Client, cache_gateway: Gateway
) -> None:
    prompt = empty_image(0x102030, prefix="v1json")
    response = client.post("/api/v1/prompts", json=prompt)
    assert response.status_code == 200, response.text
    key = sha256_of_sorted_json(prompt)
    assert response.headers["digest"] == f"SHA256={key}"
    assert response.headers["location"] == f"/api/v1/images/{key}"
    urls = response.json()["urls"]
    assert urls[0] == f"/api/v1/images/{key}" and len(urls) == 2
    name = urls[1].rsplit("/", 1)[1]
    assert name.startswith("v1json_") and name.endswith(".png")
    assert response.headers["content-disposition"] == f'filename="{name}"'
    for url in urls:
        image = client.get(url)
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert png(image.content).convert("RGB").getpixel((1, 1)) == (0x10, 0x20, 0x30)
    # the answer was served from the gateway's memory: ComfyUI's output folder keeps nothing
    assert not list(cache_gateway.output_dir.rglob("v1json_*"))


def test_accept_image_png_answers_with_the_file_itself(client: httpx.Client) -> None:
    response = client.post(
        "/api/v1/prompts",
        json=empty_image(0x00FF00, width=8, height=4, prefix="v1png"),
        headers={"Accept": "image/png"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-disposition"].startswith('filename="v1png_')
    assert response.headers["digest"].startswith("SHA256=")
    assert png(response.content).size == (8, 4)


def test_a_repeated_request_in_another_key_order_is_served_without_a_comfyui_job(
    client: httpx.Client, cache_gateway: Gateway
) -> None:
    prompt = empty_image(0x0000FE, prefix="v1cache")
    first = client.post("/api/v1/prompts", json=prompt, headers={"Accept": "image/png"})
    assert first.status_code == 200, first.text
    assert first.headers["cache-status"] == "comfy-gateway; fwd=miss; stored"
    ran = comfy_prompts(cache_gateway)
    # the same graph, keys in the opposite order and spaced out: the same canonical body
    reordered = {
        node_id: {key: node[key] for key in reversed(node)}
        for node_id, node in reversed(prompt.items())
    }
    body = json.dumps(reordered, indent=3).encode()
    assert body != json.dumps(prompt).encode()
    started = time.monotonic()
    again = client.post(
        "/api/v1/prompts",
        content=body,
        headers={"Content-Type": "application/json", "Accept": "image/png"},
    )
    elapsed = time.monotonic() - started
    assert again.status_code == 200, again.text
    assert again.headers["cache-status"] == "comfy-gateway; hit"
    assert again.headers["digest"] == first.headers["digest"]
    assert again.content == first.content
    assert comfy_prompts(cache_gateway) == ran, "a cache hit must not reach ComfyUI"
    assert elapsed < 1.0
    # Cache-Control: no-cache runs it again (and keeps the new answer)
    fresh = client.post("/api/v1/prompts", json=prompt, headers={"Cache-Control": "no-cache"})
    assert fresh.status_code == 200
    assert fresh.headers["cache-status"] == "comfy-gateway; fwd=request; stored"
    assert comfy_prompts(cache_gateway) == ran + 1


def test_a_random_seed_graph_is_never_served_from_the_cache(
    client: httpx.Client, cache_gateway: Gateway
) -> None:
    prompt = graph("t2i")
    # The editor's seed widget, sent along by some exporters: ComfyUI ignores it, but the
    # client asked for a new seed per run.
    prompt["5"]["inputs"]["control_after_generate"] = "randomize"
    ran = comfy_prompts(cache_gateway)
    for _ in range(2):
        response = client.post("/api/v1/prompts", json=prompt)
        assert response.status_code == 200, response.text
        assert response.headers["cache-status"] == "comfy-gateway; fwd=bypass; detail=random"
    assert comfy_prompts(cache_gateway) == ran + 2
    key = response.headers["digest"].removeprefix("SHA256=")
    assert client.get(f"/api/v1/images/{key}").status_code == 200  # still served by digest


def test_a_graph_without_output_files_is_a_204(client: httpx.Client) -> None:
    preview_only = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1,
                                                       "color": 7}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }  # fmt: skip
    response = client.post("/api/v1/prompts", json=preview_only)
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert response.headers["digest"] == f"SHA256={sha256_of_sorted_json(preview_only)}"


def test_multipart_with_an_input_image_runs_on_that_image(
    client: httpx.Client, cache_gateway: Gateway
) -> None:
    uploaded = Image.new("RGB", (32, 32), (200, 40, 10))
    buffer = io.BytesIO()
    uploaded.save(buffer, "PNG")
    prompt = graph("g2_load_scale_invert_save")
    prompt["1"]["inputs"]["image"] = "mine.png"
    prompt["4"]["inputs"]["filename_prefix"] = "v1multi"
    ran = comfy_prompts(cache_gateway)

    def send() -> httpx.Response:
        return client.post(
            "/api/v1/prompts",
            data={"prompt": json.dumps({"prompt": prompt})},  # the docs' wrapper is unwrapped
            files={"files": ("mine.png", buffer.getvalue(), "image/png")},
            headers={"Accept": "image/png"},
        )

    response = send()
    assert response.status_code == 200, response.text
    assert near(png(response.content).convert("RGB").getpixel((5, 5)), (55, 215, 245))
    assert response.headers["cache-status"] == "comfy-gateway; fwd=miss; stored"
    # the file's bytes are part of the digest: the same upload is a hit...
    assert send().headers["cache-status"] == "comfy-gateway; hit"
    assert comfy_prompts(cache_gateway) == ran + 1
    # ...and different bytes under the same name are not
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (0, 0, 0)).save(buffer, "PNG")
    other = send()
    assert other.headers["digest"] != response.headers["digest"]
    assert near(png(other.content).convert("RGB").getpixel((5, 5)), (255, 255, 255))
    assert not list(cache_gateway.input_dir.glob("gw-*")), "the job's input files are removed"


def test_a_file_the_graph_does_not_name_is_a_400(client: httpx.Client) -> None:
    response = client.post(
        "/api/v1/prompts",
        data={"prompt": json.dumps(empty_image(1))},
        files={"files": ("stray.png", b"\x89PNG\r\n\x1a\n", "image/png")},
    )
    assert response.status_code == 400
    assert response.json()["location"] == "files" and "stray.png" in response.json()["error"]


def test_input_files_by_name_are_cached_only_when_the_caller_asks(
    client: httpx.Client, cache_gateway: Gateway
) -> None:
    prompt = graph("g2_load_scale_invert_save")  # LoadImage example.png from the input folder
    prompt["4"]["inputs"]["filename_prefix"] = "v1external"
    first = client.post("/api/v1/prompts", json=prompt)
    assert first.headers["cache-status"] == "comfy-gateway; fwd=bypass; detail=external"
    asked = "/api/v1/prompts?cache_external_inputs=true"
    assert client.post(asked, json=prompt).headers["cache-status"].endswith("fwd=miss; stored")
    ran = comfy_prompts(cache_gateway)
    assert client.post(asked, json=prompt).headers["cache-status"] == "comfy-gateway; hit"
    assert comfy_prompts(cache_gateway) == ran


@pytest.mark.parametrize(
    ("body", "content_type", "code"),
    [
        (b"{not json", "application/json", "invalid_request"),
        (b"[1, 2]", "application/json", "invalid_request"),
        (json.dumps(graph("g4_validation_error")).encode(), "application/json", "prompt_invalid"),
        (json.dumps(graph("g6_no_outputs")).encode(), None, "no_outputs"),
    ],
)
def test_invalid_requests_are_400s(
    client: httpx.Client, body: bytes, content_type: str | None, code: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/api/v1/prompts", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == code


def test_a_full_queue_is_a_429_with_retry_after(client: httpx.Client) -> None:
    answered = empty_image(0x717171, prefix="v1full")
    assert client.post("/api/v1/prompts", json=answered).status_code == 200
    with ThreadPoolExecutor(2) as pool:
        jobs = []
        for seed in (61, 62):  # one running, one waiting: MAX_QUEUE_DEPTH 2
            body = {"prompt": slow_graph(seed=seed), "id": f"v1-busy-{seed}"}
            jobs.append(pool.submit(client.post, "/prompt", json=body))
            wait_for_status(client, f"v1-busy-{seed}", "running" if seed == 61 else "queued")
        eventually(lambda: client.get("/ready").status_code == 503, what="a full queue")
        response = client.post("/api/v1/prompts", json=empty_image(0x616161))
        assert response.status_code == 429, response.text
        assert response.json()["code"] == "queue_full"
        assert response.headers["retry-after"] == "5"
        # a request answered before still is: the cache needs no room in the queue
        cached = client.post("/api/v1/prompts", json=answered)
        assert cached.status_code == 200 and cached.headers["cache-status"].endswith("hit")
        for seed in (62, 61):
            assert client.post("/interrupt", json={"id": f"v1-busy-{seed}"}).status_code == 200
        assert [job.result().status_code for job in jobs] == [409, 409]
    eventually(lambda: client.get("/ready").status_code == 200, what="room in the queue")


def test_get_prompts_returns_the_last_graph_as_its_request_sent_it(client: httpx.Client) -> None:
    prompt = empty_image(0x424242, prefix="v1last")
    assert client.post("/api/v1/prompts", json=prompt).status_code == 200
    last = client.get("/api/v1/prompts")
    assert last.status_code == 200
    assert last.json() == prompt  # not the gateway's rewrite (unique save prefix)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/v1/images/" + "0" * 64, 404),
        ("/api/v1/images/not-a-digest", 400),
        ("/api/v1/images/" + "0" * 64 + "/x.png", 404),
    ],
)
def test_unknown_digests(client: httpx.Client, path: str, status: int) -> None:
    assert client.get(path).status_code == status
