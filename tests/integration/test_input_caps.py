"""Input caps on a real gateway: a crafted image bomb of each kind (issue 20, class 7) is a
located 4xx on every path an input takes (base64 and a URL in a graph, a workflow's image
field, /api/v1/prompts files, the passthrough's upload, /api/v2 assets and jobs, /sdapi/v1
init images); none reaches ComfyUI, and after each the gateway's capacity is whole.

The tenants' gateway (conftest's `tenant_gateway`): MAX_INPUT_PIXELS=2048x2048, INPUT_MAX_MB=1,
MAX_INPUT_FRAMES at its default (1000); its URL inputs may reach 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.images import apng, bomb_png, gif, ico_lying, mpo, pillow_file, tiff, webp_canvas_lie
from tests.integration.fileserver import FileServer
from tests.integration.harness import Gateway, assert_capacity_whole
from tests.integration.tenants import leave_comfyui_idle

BOMBS = {
    # Issue 20's three: a frame after an unknown GIF block, TIFF pages past the 1000th (the
    # frame cap answers), an MPO's second image.
    "gif-frame-after-unknown-block": gif((32, 32), (32, 32), (3000, 3000), before_last=b"\x00junk"),
    "tiff-pages-past-the-1000th": tiff(*[(1, 1)] * 1100, (3000, 3000)),
    "mpo-second-image": mpo((64, 32), (64, 32), declared=(3000, 3000)),
    # Siblings: frames each under the cap, over it together; an image after the image (ffmpeg
    # draws both); a WebP bitstream past its canvas; a format the gateway does not read.
    "apng-frames": apng(1024, 1024, 8),
    "png-concatenated": pillow_file("PNG", (64, 64)) + bomb_png(3000, 3000),
    "webp-bitstream-past-the-canvas": webp_canvas_lie((64, 64), (3000, 3000)),
    "ico-lying-entry": ico_lying(16, bomb_png(3000, 3000)),
}
# What each refusal says: a cap, a format the gateway does not read, or (/prompt's own sniffing,
# first) a file no image loader reads.
REASONS = (
    "MAX_INPUT_PIXELS",
    "MAX_INPUT_FRAMES",
    "not an image the gateway accepts",
    "expected image",
)


@pytest.fixture(scope="module")
def gateway(tenant_gateway: Gateway) -> Gateway:
    return tenant_gateway


@pytest.fixture(scope="module")
def files() -> Iterator[FileServer]:
    server = FileServer("127.0.0.1")  # loopback: the gateway's ALLOWED_PRIVATE_NETWORKS
    yield server
    server.close()


@pytest.fixture(autouse=True)
def idle_comfyui(gateway: Gateway) -> Iterator[None]:
    yield
    leave_comfyui_idle(gateway)


def load_graph(image: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "cap"}},
    }


def upload(field: str, name: str, data: bytes, **fields: str) -> dict[str, Any]:
    return {"files": {field: (name, data, "application/octet-stream")}, "data": fields}


Path_ = Callable[[httpx.Client, bytes, FileServer], tuple[httpx.Response, str]]


def prompt_base64(alice: httpx.Client, data: bytes, _: FileServer) -> tuple[httpx.Response, str]:
    graph = load_graph(base64.b64encode(data).decode())
    return alice.post("/prompt", json={"prompt": graph}), "prompt.1.inputs.image"


def prompt_url(alice: httpx.Client, data: bytes, files: FileServer) -> tuple[httpx.Response, str]:
    files.files["/input"] = data
    graph = load_graph(files.url("/input"))
    return alice.post("/prompt", json={"prompt": graph}), "prompt.1.inputs.image"


def workflow_field(alice: httpx.Client, data: bytes, _: FileServer) -> tuple[httpx.Response, str]:
    body = {"image": base64.b64encode(data).decode(), "prompt": "a cat", "steps": 1}
    return alice.post("/workflows/sd15/img2img", json={"input": body}), "image"


def v1_files(alice: httpx.Client, data: bytes, _: FileServer) -> tuple[httpx.Response, str]:
    form = {"prompt": (None, json.dumps(load_graph("in.img")), "application/json")}
    answer = alice.post("/api/v1/prompts", files={**form, "in": ("in.img", data, "image/png")})
    return answer, "files.in.img"


def passthrough_upload(
    alice: httpx.Client, data: bytes, _: FileServer
) -> tuple[httpx.Response, str]:
    return alice.post("/comfy/upload/image", **upload("image", "in.img", data)), "image"


def v2_asset(alice: httpx.Client, data: bytes, _: FileServer) -> tuple[httpx.Response, str]:
    answer = alice.post("/api/v2/assets", **upload("file", "in.img", data, file_path="in.img"))
    return answer, "file"


def v2_job(alice: httpx.Client, data: bytes, _: FileServer) -> tuple[httpx.Response, str]:
    graph = load_graph(base64.b64encode(data).decode())
    return alice.post("/api/v2/jobs", json={"workflow": graph}), "prompt.1.inputs.image"


def a1111_init_image(alice: httpx.Client, data: bytes, _: FileServer) -> tuple[httpx.Response, str]:
    body = {"init_images": [base64.b64encode(data).decode()], "steps": 1}
    return alice.post("/sdapi/v1/img2img", json=body), "init_images.0"


PATHS: dict[str, Path_] = {
    "prompt-base64": prompt_base64,
    "prompt-url": prompt_url,
    "workflow-field": workflow_field,
    "api-v1-files": v1_files,
    "comfy-upload": passthrough_upload,
    "api-v2-asset": v2_asset,
    "api-v2-job": v2_job,
    "sdapi-init-image": a1111_init_image,
}


def located(response: httpx.Response, where: str) -> str:
    """The refusal's location and its words, from whichever error shape the route speaks."""
    assert response.status_code in (400, 422), response.text
    body = response.json()
    error = body.get("error")
    if isinstance(error, dict):  # the Comfy API v2's envelope
        details = error.get("details") or {}
        location, words = details.get("location"), error.get("message", "")
    else:
        location, words = body.get("location"), body.get("error", "")
    assert location is not None and location.endswith(where), body
    return str(words)


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("bomb", BOMBS.values(), ids=BOMBS.keys())
def test_a_bomb_is_a_located_refusal_on_every_path(
    gateway: Gateway, alice: httpx.Client, files: FileServer, bomb: bytes
) -> None:
    assert len(bomb) < 2**20  # under INPUT_MAX_MB: the bytes cap does not answer
    comfy_history = httpx.get(f"{gateway.comfy_url}/history", timeout=10).json()
    inputs = files_under(gateway.input_dir)
    for name, path in PATHS.items():
        response, where = path(alice, bomb, files)
        words = located(response, where)
        assert any(reason in words for reason in REASONS), (name, words)
        assert_capacity_whole(gateway, alice)
    # Nothing reached ComfyUI: no prompt but the capacity checks' (an empty image saved), no
    # file in its input folder.
    history = httpx.get(f"{gateway.comfy_url}/history", timeout=10).json()
    for prompt_id in set(history) - set(comfy_history):
        graph = history[prompt_id]["prompt"][2]
        assert all(node["class_type"] != "LoadImage" for node in graph.values()), graph
    assert files_under(gateway.input_dir) == inputs


def test_an_image_at_the_caps_goes_through_every_path(
    gateway: Gateway, alice: httpx.Client, files: FileServer
) -> None:
    """What the caps allow still runs: an animation of 4 frames of 1024x1024 (4.2 MP in all,
    MAX_INPUT_PIXELS) through /prompt, and a plain 2048x2048 PNG through an upload."""
    frames = pillow_file("GIF", *[(1024, 1024)] * 4)
    graph = load_graph(base64.b64encode(frames).decode())
    answer = alice.post("/prompt", json={"prompt": graph})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["images"]) == 4  # LoadImage stacked the frames as a batch
    fits = pillow_file("PNG", (2048, 2048))
    ok = alice.post("/comfy/upload/image", **upload("image", "fits.png", fits))
    assert ok.status_code == 200, ok.text
    assert_capacity_whole(gateway, alice)
