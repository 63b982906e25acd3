"""POST /prompt against a real ComfyUI: outputs, ComfyUI's refusals and failures, isolation."""

from __future__ import annotations

import asyncio
import base64
import io
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageStat

from app.comfy.client import ComfyClient
from app.core.errors import ComfyFailed
from tests.integration.harness import Gateway, comfy_version, graph


def decode_image(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def empty_image(color: int, width: int = 64, height: int = 64, prefix: str = "t") -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": width, "height": height, "batch_size": 1, "color": color},
        },
        "2": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": prefix},
        },
    }


def test_empty_image_comes_back_as_a_red_png(client: httpx.Client, gateway: Gateway) -> None:
    response = client.post("/prompt", json={"prompt": graph("g1_empty_save"), "id": "red-1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "red-1"
    assert len(body["images"]) == len(body["filenames"]) == 1
    image = decode_image(body["images"][0])
    assert image.format == "PNG"
    assert image.size == (64, 64)
    assert image.convert("RGB").getpixel((10, 10)) == (255, 0, 0)
    assert body["filenames"][0].endswith(".png")
    assert set(body["stats"]) == {"queue", "execution", "postprocess", "total"}
    assert body["stats"]["total"] >= body["stats"]["execution"] >= 0
    # the graph as submitted: its save prefix made unique for this job
    prefix = body["prompt"]["2"]["inputs"]["filename_prefix"]
    assert prefix.startswith("ci_empty_") and prefix != "ci_empty"
    # the job's output file was removed after it was read
    assert not list(gateway.output_dir.rglob("ci_empty_*"))


def test_resubmitting_an_identical_graph_runs_it_again(client: httpx.Client) -> None:
    first = client.post("/prompt", json={"prompt": empty_image(0x00FF00)})
    second = client.post("/prompt", json={"prompt": empty_image(0x00FF00)})
    assert first.status_code == second.status_code == 200, second.text
    assert first.json()["filenames"] != second.json()["filenames"]
    assert decode_image(second.json()["images"][0]).convert("RGB").getpixel((0, 0)) == (0, 255, 0)


def test_loaded_image_is_scaled_and_inverted(client: httpx.Client, gateway: Gateway) -> None:
    response = client.post("/prompt", json={"prompt": graph("g2_load_scale_invert_save")})
    assert response.status_code == 200, response.text
    image = decode_image(response.json()["images"][0]).convert("RGB")
    assert image.size == (32, 32)
    original = Image.open(gateway.input_dir / "example.png").convert("RGB")
    for channel, (got, had) in enumerate(
        zip(ImageStat.Stat(image).mean, ImageStat.Stat(original).mean, strict=True)
    ):
        assert abs(got - (255 - had)) < 12, f"channel {channel} is not inverted"


def test_execution_error_is_a_502_naming_the_node(client: httpx.Client) -> None:
    response = client.post("/prompt", json={"prompt": graph("g3_exec_error")})
    assert response.status_code == 502, response.text
    body = response.json()
    assert body["code"] == "execution_failed"
    assert body["details"]["node_id"] == "2"
    assert body["details"]["class_type"] == "ImageToMask"
    assert body["details"]["exception_message"]
    assert "ImageToMask" in body["error"]
    assert "tensor(" not in response.text


@pytest.mark.parametrize(
    ("name", "code", "locations"),
    [
        (
            "g4_validation_error",
            "prompt_invalid",
            {"prompt.1.inputs.width", "prompt.2.inputs.upscale_method"},
        ),
        ("g5_unknown_node", "prompt_invalid", {"prompt.1.class_type"}),
        ("g6_no_outputs", "no_outputs", None),
        ("g7_missing_input", "prompt_invalid", {"prompt.2.inputs.images"}),
    ],
)
def test_graphs_comfyui_refuses_are_located_400s(
    client: httpx.Client, name: str, code: str, locations: set[str] | None
) -> None:
    response = client.post("/prompt", json={"prompt": graph(name)})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == code
    assert body["error"]
    if locations is not None:
        assert body["location"] in locations
    if code == "prompt_invalid" and name != "g5_unknown_node":
        assert set(body["details"]["node_errors"]) == {loc.split(".")[1] for loc in locations or ()}


def test_unknown_node_error_names_the_class(client: httpx.Client) -> None:
    body = client.post("/prompt", json={"prompt": graph("g5_unknown_node")}).json()
    assert "NoSuchNode" in body["error"]


@pytest.mark.parametrize(
    ("payload", "location"),
    [
        ({}, "prompt"),
        ({"prompt": {}}, "prompt"),
        ({"prompt": {"1": {"inputs": {}}}}, "prompt.1.class_type"),
        ({"prompt": {"1": {"class_type": "X", "inputs": 5}}}, "prompt.1.inputs"),
        ({"prompt": graph("g1_empty_save"), "id": "../etc"}, "id"),
        ({"prompt": graph("g1_empty_save"), "surprise": 1}, "surprise"),
        ([1, 2], "body"),
    ],
)
def test_schema_violations_are_400s_naming_the_field(
    client: httpx.Client, payload: Any, location: str
) -> None:
    response = client.post("/prompt", json=payload)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "invalid_request"
    assert body["location"] == location
    assert body["details"]["errors"]


EMPTY = {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1,
                                               "color": 0}}  # fmt: skip


def save(images: Any) -> dict[str, Any]:
    return {"class_type": "SaveImage", "inputs": {"images": images, "filename_prefix": "bad"}}


# Graphs that ComfyUI 0.33 answers with a bare HTTP 500, or runs although they are wrong (a
# negative output index picks the last output): the gateway locates the mistake first.
@pytest.mark.parametrize(
    ("prompt", "location"),
    [
        ({"1": "x", "2": save(["1", 0])}, "prompt.1"),
        ({"1": [1], "2": save(["1", 0])}, "prompt.1"),
        ({"1": {**EMPTY, "inputs": [1]}, "2": save(["1", 0])}, "prompt.1.inputs"),
        ({"1": {**EMPTY, "inputs": None}, "2": save(["1", 0])}, "prompt.1.inputs"),
        ({"1": {**EMPTY, "_meta": None}, "2": save(["1", 0])}, "prompt.1._meta"),
        ({"1": {"class_type": "Nope", "inputs": {}, "_meta": "x"}, "2": save(["1", 0])},
         "prompt.1._meta"),
        ({"1": EMPTY, "2": save(["1", -1])}, "prompt.2.inputs.images"),
        ({"1": EMPTY, "2": save([1, 0])}, "prompt.2.inputs.images"),
        ({"1": EMPTY, "2": save(["9", 0])}, "prompt.2.inputs.images"),
        ({"1": EMPTY, "2": save(["1", 0, 0])}, "prompt.2.inputs.images"),
        ({"1": EMPTY, "2": save(["1", True])}, "prompt.2.inputs.images"),
        ([EMPTY], "prompt"),
        ("x", "prompt"),
    ],
)  # fmt: skip
def test_malformed_graphs_are_located_400s_never_a_retry(
    client: httpx.Client, prompt: Any, location: str
) -> None:
    response = client.post("/prompt", json={"prompt": prompt})
    assert response.status_code == 400, response.text
    assert response.json()["location"] == location
    assert "retry-after" not in response.headers


def test_a_comfyui_500_is_a_502_naming_it_not_a_retry(gateway: Gateway) -> None:
    """ComfyUI's own answer to a graph it fails on, through the client the gateway uses."""

    async def submit() -> None:
        client = ComfyClient(gateway.comfy_url)
        try:
            # A list for a graph: ComfyUI 0.3.75 and 0.33 both answer it with a bare 500.
            await client.submit([1], prompt_id=str(uuid.uuid4()), client_id="t")  # type: ignore[arg-type]
        finally:
            await client.aclose()

    with pytest.raises(ComfyFailed) as failed:
        asyncio.run(submit())
    assert failed.value.status == 502
    assert "HTTP 500" in failed.value.message
    assert "Retry-After" not in failed.value.headers


JSON_LEAF = st.none() | st.booleans() | st.integers(-3, 10) | st.text(max_size=6)
NODE_IDS = st.sampled_from(["1", "2", "3", "x"])
INPUT_VALUE = (
    JSON_LEAF
    | st.tuples(NODE_IDS, st.integers(-2, 3)).map(list)
    | st.lists(JSON_LEAF, max_size=3)
    | st.dictionaries(st.text(max_size=3), JSON_LEAF, max_size=2)
)
NODE = st.fixed_dictionaries(
    {
        "class_type": st.sampled_from(["EmptyImage", "SaveImage", "ImageInvert", "Nope", ""])
        | JSON_LEAF,
        "inputs": st.dictionaries(
            st.sampled_from(["images", "image", "width", "height", "batch_size", "color"]),
            INPUT_VALUE,
            max_size=4,
        )
        | JSON_LEAF,
    },
    optional={"_meta": st.dictionaries(st.just("title"), JSON_LEAF) | JSON_LEAF},
)
GRAPH = st.dictionaries(NODE_IDS, NODE | JSON_LEAF, max_size=4) | JSON_LEAF | st.lists(NODE)


@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure here is reproducible
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(prompt=GRAPH)
def test_schema_fuzz_never_a_server_error_or_a_retry(client: httpx.Client, prompt: Any) -> None:
    """Random graph-shaped bodies: each is run, or refused with a located 4xx; never a 5xx
    other than a node failing while it runs (502 execution_failed), never a Retry-After."""
    response = client.post("/prompt", json={"prompt": prompt})
    body = response.json()
    assert "retry-after" not in response.headers, body
    if response.status_code == 200:
        return
    if response.status_code == 502:
        assert body["code"] == "execution_failed", body
        return
    assert response.status_code == 400, body
    assert body["error"] and body["location"].startswith("prompt"), body


def test_malformed_json_is_a_400(client: httpx.Client) -> None:
    response = client.post(
        "/prompt", content=b'{"prompt": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"


def test_body_over_the_cap_is_a_413(client: httpx.Client) -> None:
    big = {"prompt": graph("g1_empty_save"), "id": "big", "pad": "x" * (1024 * 1024 + 10)}
    response = client.post("/prompt", json=big)
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"

    def chunks() -> Any:
        for _ in range(20):
            yield b" " * 100_000

    streamed = client.post(
        "/prompt", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413
    assert "MAX_BODY_SIZE_MB" in streamed.json()["error"]


def test_unknown_routes_and_methods_answer_in_the_error_shape(client: httpx.Client) -> None:
    missing = client.get("/nope")
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"
    wrong = client.get("/prompt")
    assert wrong.status_code == 405
    assert wrong.json()["code"] == "method_not_allowed"


def test_tiny_checkpoint_txt2img_returns_a_64px_png(client: httpx.Client) -> None:
    response = client.post("/prompt", json={"prompt": graph("t2i")})
    assert response.status_code == 200, response.text
    image = decode_image(response.json()["images"][0])
    assert image.format == "PNG"
    assert image.size == (64, 64)


def test_concurrent_jobs_each_get_exactly_their_own_outputs(gateway: Gateway) -> None:
    def run(i: int) -> tuple[int, httpx.Response]:
        color = (i * 15) << 16 | (255 - i * 15) << 8 | (i * 7)
        prompt = empty_image(color, width=16 + i * 4, height=24, prefix="same")
        with gateway.client() as c:
            return color, c.post("/prompt", json={"prompt": prompt, "id": f"c{i}"})

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(run, range(16)))
    for i, (color, response) in enumerate(results):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["id"] == f"c{i}"
        assert len(body["images"]) == 1
        image = decode_image(body["images"][0]).convert("RGB")
        assert image.size == (16 + i * 4, 24)
        assert image.getpixel((0, 0)) == ((color >> 16) & 255, (color >> 8) & 255, color & 255)


def test_duplicate_running_id_is_a_409(gateway: Gateway) -> None:
    with ThreadPoolExecutor(1) as pool, gateway.client() as c:
        pending = pool.submit(post, gateway, slow_graph(), "dup")
        wait_for_status(c, "dup", "running")
        clash = c.post("/prompt", json={"prompt": graph("g1_empty_save"), "id": "dup"})
        assert c.post("/interrupt", json={"id": "dup"}).status_code == 200
        assert clash.status_code == 409
        assert clash.json()["location"] == "id"
        assert pending.result().json()["code"] == "interrupted"
    wait_for_comfy_queue(gateway, running=0)


def test_interrupt_running_and_queued_jobs(gateway: Gateway) -> None:
    with ThreadPoolExecutor(2) as pool, gateway.client() as c:
        running = pool.submit(post, gateway, slow_graph(seed=1), "run-1")
        wait_for_status(c, "run-1", "running")
        queued = pool.submit(post, gateway, slow_graph(seed=2), "queued-1")
        wait_for_status(c, "queued-1", "queued")

        answer = c.post("/interrupt", json={"id": "queued-1"})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"id": "queued-1", "interrupted": True}
        assert queued.result(timeout=10).status_code == 409
        assert queued.result().json()["code"] == "interrupted"
        assert not running.done()

        assert c.post("/interrupt", json={"id": "run-1"}).status_code == 200
        response = running.result(timeout=30)
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "interrupted"
        wait_for_comfy_queue(gateway, running=0)

        finished = c.post("/interrupt", json={"id": "run-1"})
        assert finished.status_code == 404
        assert finished.json()["location"] == "id"
        assert c.post("/prompt", json={"prompt": empty_image(7)}).status_code == 200


def slow_graph(seed: int = 1) -> dict[str, Any]:
    """txt2img with enough steps to take minutes on CPU unless interrupted."""
    slow = graph("t2i")
    slow["5"]["inputs"].update(steps=2000, seed=seed)
    return slow


def post(gateway: Gateway, prompt: dict[str, Any], request_id: str) -> httpx.Response:
    with gateway.client() as c:
        return c.post("/prompt", json={"prompt": prompt, "id": request_id})


def wait_for_status(c: httpx.Client, request_id: str, status: str, timeout_s: float = 60) -> None:
    """Wait until GET /prompt/{id} reports the job in this status."""
    deadline = time.monotonic() + timeout_s
    seen = None
    while time.monotonic() < deadline:
        answer = c.get(f"/prompt/{request_id}")
        seen = answer.json().get("status") if answer.status_code == 200 else answer.status_code
        if seen == status:
            return
        time.sleep(0.05)
    raise AssertionError(f"job {request_id} never reached {status!r} (last seen: {seen})")


def wait_for_comfy_queue(
    gateway: Gateway, *, running: int, pending: int = 0, timeout_s: float = 60
) -> None:
    """Wait until ComfyUI itself reports this many running and pending prompts."""
    deadline = time.monotonic() + timeout_s
    seen: Any = None
    while time.monotonic() < deadline:
        seen = httpx.get(f"{gateway.comfy_url}/queue", timeout=5).json()
        if (len(seen["queue_running"]), len(seen["queue_pending"])) == (running, pending):
            return
        time.sleep(0.1)
    raise AssertionError(f"ComfyUI's queue never reached {running}/{pending}: {seen}")


def test_models_lists_the_tiny_checkpoint(client: httpx.Client) -> None:
    response = client.get("/models")
    assert response.status_code == 200
    models = response.json()
    assert "tiny-sd15-random.safetensors" in models["checkpoints"]
    assert "tiny-lora.safetensors" in models["loras"]
    assert all(isinstance(v, list) for v in models.values())


def test_probes_and_docs(client: httpx.Client) -> None:
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "healthy"
    assert health.json()["comfyui_version"] == comfy_version()
    metrics = client.get("/metrics").text
    info = f'comfy_gateway_comfyui_info{{instance="0",version="{comfy_version()}"}} 1.0'
    assert info in metrics
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "queue_depth": 0}
    spec = client.get("/openapi.json").json()
    assert {"/prompt", "/interrupt", "/health", "/ready", "/models"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "localhost"])
def test_a_default_host_gateway_answers_over_ipv4_and_ipv6(gateway: Gateway, host: str) -> None:
    """HOST unset means `::`, which must take IPv4 too (asyncio binds it IPv6-only)."""
    assert "HOST" not in gateway.env
    answer = httpx.get(f"http://{host}:{gateway.port}/health", timeout=10)
    assert answer.status_code == 200


def test_no_job_leaves_its_files_behind(client: httpx.Client, gateway: Gateway) -> None:
    """Files a job saved are removed once it ends: after success (two outputs, one converted),
    and after a failure that came once a save node had written its file."""
    done = client.post(
        "/prompt",
        json={"prompt": {**empty_image(1, prefix="clean_ok"), "3": save(["1", 0])},
              "convert_output": {"format": "webp"}},
    )  # fmt: skip
    assert done.status_code == 200, done.text
    saved_then_failed = {
        "1": EMPTY,
        "2": {**save(["1", 0]), "inputs": {"images": ["1", 0], "filename_prefix": "clean_fail"}},
        "3": {"class_type": "ImageToMask", "inputs": {"image": ["1", 0], "channel": "alpha"}},
        "4": {"class_type": "MaskToImage", "inputs": {"mask": ["3", 0]}},
        "5": save(["4", 0]),
    }  # fmt: skip
    failed = client.post("/prompt", json={"prompt": saved_then_failed})
    assert failed.status_code == 502, failed.text
    # ComfyUI's own history shows the failed job did write a file before node 3 failed...
    history = httpx.get(f"{gateway.comfy_url}/history", params={"max_items": "5"}).json()
    written = [
        image["filename"]
        for entry in history.values()
        for image in (entry.get("outputs") or {}).get("2", {}).get("images", [])
        if image["filename"].startswith("clean_fail")
    ]
    assert written, "the failing graph saved nothing before it failed: nothing is tested"
    # ...and the output folder holds nothing: neither job's files, nor any earlier test's.
    leftovers = [p for p in Path(gateway.output_dir).rglob("*") if p.is_file()]
    assert leftovers == []
