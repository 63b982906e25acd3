"""Workflow endpoints against a real ComfyUI: availability, real runs on CPU, Swagger, warmup.

The shared gateway serves the shipped workflows with the tiny checkpoint as the warmup prompt's
(and so the default) checkpoint; its ComfyUI has no custom nodes and no SDXL, FLUX or LTX files.
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from app.registry.load import discover
from tests.integration.harness import GRAPHS, ROOT, Gateway, running

TINY = "tiny-sd15-random.safetensors"
LORA = "tiny-lora.safetensors"
SHIPPED = [name for name, _ in discover(ROOT / "workflows")]
COGVIDEOX_NODES = [
    "DownloadAndLoadCogVideoModel",
    "CogVideoTextEncode",
    "CogVideoImageEncode",
    "CogVideoSampler",
    "CogVideoDecode",
    "VHS_VideoCombine",
]
# What this test ComfyUI lacks for each shipped workflow's defaults: exactly these, no more.
MISSING: dict[str, list[str]] = {
    "cogvideox/img2video": [f"{node} is not installed" for node in COGVIDEOX_NODES]
    + ["text encoder t5xxl_fp8_e4m3fn.safetensors not found"],
    "flux/schnell-txt2img": [
        "diffusion model flux1-schnell.safetensors not found",
        "text encoder t5xxl_fp8_e4m3fn.safetensors not found",
        "text encoder clip_l.safetensors not found",
        "VAE ae.safetensors not found",
    ],
    "ltx/txt2video": [
        "checkpoint ltx-video-2b-v0.9.5.safetensors not found",
        "text encoder t5xxl_fp16.safetensors not found",
    ],
    "pony/txt2img": ["checkpoint ponyDiffusionV6XL_v6StartWithThisOne.safetensors not found"],
    "sd15/img2img": [],
    "sd15/inpaint": [],
    "sd15/txt2img": [],
    "sdxl/img2img": ["checkpoint sd_xl_base_1.0.safetensors not found"],
    "sdxl/txt2img": ["checkpoint sd_xl_base_1.0.safetensors not found"],
    "upscale/image": [],
}


def png_b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def sizes(body: dict[str, Any]) -> list[tuple[int, int]]:
    return [Image.open(io.BytesIO(base64.b64decode(b))).size for b in body["images"]]


def in64() -> str:
    return png_b64(Image.new("RGB", (64, 64), (40, 120, 200)))


def centre_mask() -> str:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    return png_b64(mask)


def test_every_shipped_workflow_is_listed_with_exactly_what_is_missing(
    client: httpx.Client,
) -> None:
    assert sorted(MISSING) == SHIPPED  # a new shipped workflow needs its line above
    listed = {w["name"]: w for w in client.get("/workflows").json()["workflows"]}
    assert sorted(listed) == SHIPPED
    for name, missing in MISSING.items():
        assert (listed[name]["available"], listed[name]["reasons"]) == (not missing, missing)
        assert listed[name]["route"] == f"/workflows/{name}"


@pytest.mark.parametrize(
    ("name", "input", "expected"),
    [
        (
            "sd15/txt2img",
            {"prompt": "a cat", "width": 72, "height": 64, "steps": 2, "batch_size": 2},
            [(72, 64), (72, 64)],
        ),
        ("sd15/img2img", {"image": in64(), "prompt": "a cat", "steps": 2}, [(64, 64)]),
        (
            "sd15/inpaint",
            {"image": in64(), "mask": centre_mask(), "prompt": "a hat", "steps": 2},
            [(64, 64)],
        ),
        ("upscale/image", {"image": "in64.png", "scale_by": 1.5}, [(96, 96)]),
        (
            # unavailable with its SDXL default, but this request names what is installed
            "sdxl/txt2img",
            {
                "prompt": "a lighthouse",
                "checkpoint": TINY,
                "width": 64,
                "height": 72,
                "steps": 2,
                "loras": [{"name": LORA, "strength_model": 0.8, "strength_clip": 0.5}],
            },
            [(64, 72)],
        ),
        (
            "pony/txt2img",
            {
                "prompt": "1girl",
                "source": "anime",
                "checkpoint": TINY,
                "width": 64,
                "height": 64,
                "steps": 2,
            },
            [(64, 64)],
        ),
    ],
)
def test_workflows_run_for_real(
    client: httpx.Client, name: str, input: dict[str, Any], expected: list[tuple[int, int]]
) -> None:
    job_id = "wf-" + name.replace("/", "-")
    response = client.post(f"/workflows/{name}", json={"input": input, "id": job_id})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == job_id
    assert sizes(body) == expected
    assert len(body["filenames"]) == len(expected)
    # the input is echoed with its defaults filled in
    assert {k: body["input"][k] for k in input} == input
    if "checkpoint" in body["input"]:
        assert body["input"]["checkpoint"] == TINY
    if "seed" in body["input"]:
        assert isinstance(body["input"]["seed"], int)


def test_lora_and_pony_graphs_are_what_the_modules_say(client: httpx.Client) -> None:
    loras = [{"name": LORA, "strength_model": 0.8}, {"name": LORA, "strength_clip": 0.2}]
    body = client.post(
        "/workflows/sdxl/txt2img",
        json={
            "input": {
                "prompt": "x",
                "checkpoint": TINY,
                "width": 64,
                "height": 64,
                "steps": 1,
                "loras": loras,
            }
        },
    ).json()
    chain = [body["prompt"][n]["inputs"] for n in ("100", "101")]
    assert [(c["model"], c["strength_model"], c["strength_clip"]) for c in chain] == [
        (["1", 0], 0.8, 1.0),
        (["100", 0], 1.0, 0.2),
    ]
    assert body["prompt"]["5"]["inputs"]["model"] == ["101", 0]
    pony = client.post(
        "/workflows/pony/txt2img",
        json={
            "input": {"prompt": "1girl", "checkpoint": TINY, "width": 64, "height": 64, "steps": 1}
        },
    ).json()
    assert pony["prompt"]["3"]["inputs"]["text"] == "score_9, score_8_up, score_7_up, 1girl"
    assert pony["prompt"]["4"]["inputs"]["text"].startswith("score_6, score_5, score_4")


@pytest.mark.parametrize(
    ("name", "input", "location", "words"),
    [
        ("sd15/txt2img", {}, "input.prompt", "Field required"),
        ("sd15/txt2img", {"prompt": "x", "steps": 0}, "input.steps", "greater than or equal"),
        (
            "sd15/txt2img",
            {"prompt": "x", "checkpoint": "sd_xl_base_1.0.safetensors"},
            "input.checkpoint",
            TINY,
        ),
        ("sd15/txt2img", {"prompt": "x", "sampler_name": "warp"}, "input.sampler_name", "euler"),
        ("sd15/txt2img", {"prompt": "x", "stepz": 3}, "input.stepz", "Extra inputs"),
        (
            "sdxl/txt2img",
            {"prompt": "x", "loras": [{"name": "nope.safetensors"}]},
            "input.loras.0.name",
            LORA,
        ),
        ("ltx/txt2video", {"prompt": "x", "length": 10}, "input", "length must be 8k+1"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    client: httpx.Client, name: str, input: dict[str, Any], location: str, words: str
) -> None:
    response = client.post(f"/workflows/{name}", json={"input": input})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "invalid_request"
    assert body["location"] == location
    assert words in body["error"]


@pytest.mark.parametrize("name", ["cogvideox/img2video", "flux/schnell-txt2img", "sdxl/img2img"])
def test_an_unavailable_workflow_answers_503_with_its_reasons(
    client: httpx.Client, name: str
) -> None:
    example = {"prompt": "x"} | ({"image": "in64.png"} if "img2" in name else {})
    response = client.post(f"/workflow/{name}", json={"input": example})
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["code"] == "workflow_unavailable"
    assert body["details"]["reasons"] == MISSING[name]


def test_openapi_shows_each_workflow_with_the_enums_of_the_running_comfyui(
    client: httpx.Client, gateway: Gateway
) -> None:
    spec = client.get("/openapi.json").json()
    info = httpx.get(f"{gateway.comfy_url}/object_info/KSampler", timeout=30).json()
    samplers, schedulers = (
        info["KSampler"]["input"]["required"][k][0] for k in ("sampler_name", "scheduler")
    )
    schemas = spec["components"]["schemas"]
    for name in SHIPPED:
        assert "post" in spec["paths"][f"/workflows/{name}"]
        assert f"/workflow/{name}" not in spec["paths"]
    txt2img = schemas["Sd15Txt2imgInput"]["properties"]
    # Model fields: an installed file, or a URL to download it from (MODEL_DOWNLOADS).
    installed, url = txt2img["checkpoint"]["anyOf"]
    assert (installed["enum"], txt2img["checkpoint"]["default"]) == ([TINY], TINY)
    assert url["pattern"] == "^(https?|s3)://"
    assert txt2img["sampler_name"]["enum"] == samplers
    assert txt2img["scheduler"]["enum"] == schedulers
    assert (txt2img["steps"]["minimum"], txt2img["steps"]["maximum"]) == (1, 150)
    assert schemas["SdxlTxt2imgLoraSpec"]["properties"]["name"]["anyOf"][0]["enum"] == [LORA]
    assert schemas["Sd15Txt2imgRequest"]["examples"] == [{"input": {"prompt": "a photo of a cat"}}]
    flux = spec["paths"]["/workflows/flux/schnell-txt2img"]["post"]
    assert "**Not available on this server**" in flux["description"]


def test_the_docs_page_lists_the_workflow_endpoints_in_chromium(
    gateway: Gateway, tmp_path: Path
) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is missing: `make test` installs it")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--disable-quic",
        f"--user-data-dir={tmp_path}",
        "--virtual-time-budget=20000",
        "--dump-dom",
    ]
    done = subprocess.run(
        [chromium, *flags, f"{gateway.url}/docs"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    shown = set(re.findall(r'data-path="([^"]+)"', done.stdout))
    assert {f"/workflows/{name}" for name in SHIPPED} <= shown
    assert "Text to image with a Stable Diffusion 1.5 checkpoint." in done.stdout


def test_the_warmup_prompt_ran_before_the_gateway_was_healthy(gateway: Gateway) -> None:
    log = gateway.log_text()
    warmed = log.index(f"warmup prompt {GRAPHS / 't2i.json'} ran in")
    assert warmed < log.index(" ready: ComfyUI at")


def test_a_failing_warmup_prompt_stops_start_up_with_the_reason(tmp_path: Path) -> None:
    warmup = GRAPHS / "g3_exec_error.json"  # passes ComfyUI's validation, fails executing
    gateway = Gateway(tmp_path, WARMUP_PROMPT_FILE=str(warmup)).start(wait=False)
    try:
        assert gateway.wait_exit(180) == 1
    finally:
        gateway.stop()
    log = gateway.log_text()
    assert f"cannot start: the warmup prompt WARMUP_PROMPT_FILE={warmup} failed:" in log
    assert "ImageToMask" in log  # the node that failed, from ComfyUI's error
    assert " ready: ComfyUI at" not in log


def test_scaffold_round_trip(gateway: Gateway, tmp_path: Path) -> None:
    module = tmp_path / "workflows" / "scaffolded" / "t2i.py"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.tools.cli",
            "scaffold",
            str(GRAPHS / "t2i.json"),
            str(module),
            "--comfy-url",
            gateway.comfy_url,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    with (
        running(tmp_path / "second", WORKFLOW_DIR=str(module.parents[1])) as second,
        second.client() as client,
    ):
        (listed,) = client.get("/workflows").json()["workflows"]
        assert (listed["route"], listed["available"]) == ("/workflows/scaffolded/t2i", True)
        response = client.post("/workflows/scaffolded/t2i", json={"input": {"width": 72}})
        assert response.status_code == 200, response.text
        body = response.json()
    assert sizes(body) == [(72, 64)]
    assert body["input"]["ckpt_name"] == TINY
    assert body["input"]["text_2"] == "a photo of a cat"
