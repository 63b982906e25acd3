"""AUTOMATIC1111's API, driven by `webuiapi` from PyPI (a client no one here wrote).

The shared gateway runs the sd15 workflows with the tiny random checkpoint; images are noise,
but of the requested size and count, from the seeds `info` reports.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from typing import Any

import httpx
import pytest
import webuiapi
from PIL import Image

from tests.integration.harness import Gateway

TINY = "tiny-sd15-random.safetensors"


@pytest.fixture
def api(gateway: Gateway) -> webuiapi.WebUIApi:
    return webuiapi.WebUIApi(host="127.0.0.1", port=gateway.port, sampler="Euler a", steps=2)


def test_txt2img(api: webuiapi.WebUIApi) -> None:
    result = api.txt2img(
        prompt="a cat <lora:tiny-lora:0.5>",
        negative_prompt="blurry",
        width=64,
        height=72,
        seed=41,
        batch_size=2,
        sampler_name="DPM++ 2M Karras",
    )
    assert [image.size for image in result.images] == [(64, 72), (64, 72)]
    assert result.info["all_seeds"] == [41, 42]
    assert result.info["comfy"] == {
        "sampler_name": "dpmpp_2m",
        "scheduler": "karras",
        "loras": ["tiny-lora.safetensors"],
    }
    assert result.info["warnings"] == []
    assert result.parameters["prompt"] == "a cat <lora:tiny-lora:0.5>"


def test_random_seed_and_warnings(api: webuiapi.WebUIApi) -> None:
    result = api.txt2img(prompt="", width=70, height=64, enable_hr=True, n_iter=2)
    assert len(result.images) == 2 and result.images[0].size == (64, 64)
    first, second = result.info["all_seeds"]
    assert second == first + 1 and first >= 0
    warnings = " ".join(result.info["warnings"])
    assert "enable_hr" in warnings and "width 70" in warnings


def test_img2img_and_inpaint(api: webuiapi.WebUIApi) -> None:
    start = Image.new("RGB", (100, 90), (10, 200, 30))
    result = api.img2img(images=[start], width=64, height=64, denoising_strength=0.5, seed=3)
    assert [image.size for image in result.images] == [(64, 64)]
    assert result.info["workflow"] == "sd15/img2img"
    assert result.parameters["init_images"] is None  # as A1111: not echoed unless asked
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    painted = api.img2img(images=[start], mask_image=mask, width=64, height=64)
    assert painted.info["workflow"] == "sd15/inpaint"
    assert painted.images[0].size == (64, 64)


def test_listings_and_options(api: webuiapi.WebUIApi) -> None:
    samplers = api.util_get_sampler_names()
    assert {"Euler a", "DPM++ 2M", "DDIM", "UniPC"} <= set(samplers)
    assert {"karras", "automatic"} <= set(api.util_get_scheduler_names())
    assert TINY in api.util_get_model_names()
    assert [lora["name"] for lora in api.get_loras()] == ["tiny-lora"]
    assert api.get_options()["sd_model_checkpoint"] == TINY
    api.util_set_model("tiny-sd15-random")
    assert api.util_get_current_model() == TINY


def test_progress_and_interrupt(api: webuiapi.WebUIApi) -> None:
    idle = api.get_progress()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0
    outcome: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: outcome.update(
            result=api.txt2img(prompt="x", width=256, height=256, steps=40, n_iter=3)
        )
    )
    worker.start()
    seen = idle
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (0 < seen["progress"] < 1):
        time.sleep(0.05)
        seen = api.get_progress()
    assert 0 < seen["progress"] < 1
    assert seen["state"]["sampling_steps"] == 40 and seen["eta_relative"] > 0
    api.interrupt()
    worker.join(60)
    result = outcome["result"]
    assert len(result.images) < 3
    assert any("interrupted" in w for w in result.info["warnings"])


def png_b64(size: tuple[int, int]) -> str:
    out = io.BytesIO()
    Image.new("RGB", size).save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


@pytest.mark.parametrize(
    ("path", "body", "location"),
    [
        ("txt2img", {"steps": 0}, "steps"),
        ("txt2img", {"width": "wide"}, "width"),
        ("txt2img", {"cfg_scale": 99}, "cfg_scale"),
        ("txt2img", {"batch_size": 8, "n_iter": 9}, "batch_size"),
        ("txt2img", {"prompt": "<lora:x:heavy>"}, "prompt"),
        ("txt2img", {"override_settings": {"sd_model_checkpoint": "nope"}}, None),
        ("img2img", {"init_images": []}, "init_images"),
        ("img2img", {"init_images": ["bm90IGFuIGltYWdl"]}, "init_images.0"),
        ("img2img", {"init_images": [png_b64((64, 64))], "denoising_strength": 0}, None),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    client: httpx.Client, path: str, body: dict[str, Any], location: str | None
) -> None:
    response = client.post(f"/sdapi/v1/{path}", json=body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["code"] == "invalid_request"
    expected = (
        location
        or {
            "txt2img": "override_settings.sd_model_checkpoint",
            "img2img": "denoising_strength",
        }[path]
    )
    assert error["location"] == expected


def test_set_options_refuses_an_unknown_checkpoint(client: httpx.Client) -> None:
    response = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "nope"})
    assert response.status_code == 400
    assert response.json()["location"] == "sd_model_checkpoint"
    assert TINY in response.json()["error"]


def test_info_is_a_json_string(client: httpx.Client) -> None:
    response = client.post(
        "/sdapi/v1/txt2img", json={"prompt": "x", "width": 64, "height": 64, "steps": 1}
    )
    body = response.json()
    assert set(body) == {"images", "parameters", "info"}
    assert json.loads(body["info"])["seed"] >= 0
