"""An output of a few MiB that does not compress (a noise PNG: LoadImage -> SaveImage, no
model) arrives byte-identical on every facade that answers with it, streamed from the gateway's
spool: POST /prompt, a workflow endpoint, A1111's txt2img, /api/v1/prompts (the file body, the
images URLs, an answer from the result cache) and v2 asset content (whole, a range, HEAD); used
as a v2 input, an output over INPUT_MAX_MB is refused before its base64 is built.

Each answer is compared with the file ComfyUI wrote (KEEP_OUTPUTS leaves it in the output
folder). The gateway's WORKFLOW_DIR holds one model-free module, `sd15/txt2img`, that loads the
noise image and saves it again: the workflow endpoint and /sdapi/v1 (SDAPI_WORKFLOW_FAMILY=sd15)
both run it.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.integration.harness import Gateway, running
from tests.integration.v2_pair import poll

SIDE_PX = 1100  # ~3.5 MiB as PNG: several of the gateway's 768 KiB pieces, over 1 MiB (spooled)

NOISE_MODULE = '''"""Load the noise image and save it again: a model-free stand-in for txt2img."""

from pydantic import BaseModel, Field


class RequestSchema(BaseModel):
    seed: int = Field(0, description="Names the saved file")


def generate_workflow(input: RequestSchema) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "noise.png"}},
        "2": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": f"large_{input.seed}"},
        },
    }
'''


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway that keeps ComfyUI's outputs, caches results, and runs the noise module."""
    workdir = tmp_path_factory.mktemp("large-outputs")
    pixels = os.urandom(SIDE_PX * SIDE_PX * 3)
    (workdir / "input").mkdir()
    Image.frombytes("RGB", (SIDE_PX, SIDE_PX), pixels).save(workdir / "input" / "noise.png")
    module = workdir / "workflows" / "sd15" / "txt2img.py"
    module.parent.mkdir(parents=True)
    module.write_text(NOISE_MODULE)
    env = {
        "KEEP_OUTPUTS": "true",
        "RESULT_CACHE_MAX_MB": "64",
        "INPUT_MAX_MB": "2",  # the output is larger: refused as a v2 input
        "WORKFLOW_DIR": str(module.parents[1]),
    }
    with running(workdir, **env) as gateway:
        yield gateway


@pytest.fixture
def client(large: Gateway) -> Iterator[httpx.Client]:
    with large.client() as c:
        yield c


def noise_graph(prefix: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "noise.png"}},
        "2": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": prefix},
        },
    }


def written(gateway: Gateway, prefix: str) -> bytes:
    """The one file ComfyUI wrote under this prefix: several MiB, as the test needs."""
    [path] = gateway.output_dir.glob(f"{prefix}_*.png")
    data = path.read_bytes()
    assert len(data) > 3 * 2**20
    return data


def unique(stem: str) -> str:
    return f"{stem}{uuid.uuid4().hex[:8]}"


def test_prompt_workflow_and_a1111_answers_carry_the_file_as_written(
    client: httpx.Client, large: Gateway
) -> None:
    prefix = unique("prompt")
    answer = client.post("/prompt", json={"prompt": noise_graph(prefix)})
    assert answer.status_code == 200, answer.text
    assert int(answer.headers["content-length"]) == len(answer.content)
    assert base64.b64decode(answer.json()["images"][0]) == written(large, prefix)

    seed = int(uuid.uuid4().int % 10**9)
    answer = client.post("/workflows/sd15/txt2img", json={"input": {"seed": seed}})
    assert answer.status_code == 200, answer.text
    assert base64.b64decode(answer.json()["images"][0]) == written(large, f"large_{seed}")

    seed += 1
    answer = client.post("/sdapi/v1/txt2img", json={"prompt": "noise", "seed": seed})
    assert answer.status_code == 200, answer.text
    assert int(answer.headers["content-length"]) == len(answer.content)
    body = answer.json()
    assert body["images"] and base64.b64decode(body["images"][0]) == written(large, f"large_{seed}")
    assert body["parameters"]["seed"] == seed


def test_v1_file_body_images_and_a_cached_answer_are_the_file_as_written(
    client: httpx.Client, large: Gateway
) -> None:
    prefix = unique("v1")
    graph = noise_graph(prefix)
    post = "/api/v1/prompts?cache_external_inputs=true"  # it loads a file: cached only if asked
    answer = client.post(post, json=graph, headers={"Accept": "image/png"})
    assert answer.status_code == 200, answer.text
    data = written(large, prefix)
    assert answer.content == data and answer.headers["content-length"] == str(len(data))
    assert answer.headers["content-type"] == "image/png"
    assert "stored" in answer.headers["cache-status"]

    cached = client.post(post, json=graph)  # answered from the result cache: no second job
    assert "hit" in cached.headers["cache-status"]
    for url in cached.json()["urls"]:  # the main file, then each file by name
        assert client.get(url).content == data, url
    again = client.post(post, json=graph, headers={"Accept": "image/png"})
    assert "hit" in again.headers["cache-status"] and again.content == data
    assert len(list(large.output_dir.glob(f"{prefix}_*"))) == 1


def test_v2_asset_content_whole_ranged_and_head(client: httpx.Client, large: Gateway) -> None:
    prefix = unique("v2")
    queued = client.post("/api/v2/jobs", json={"workflow": noise_graph(prefix)})
    assert queued.status_code == 201, queued.text
    job, _ = poll(client, queued.json()["id"])
    assert job["status"] == "succeeded", job
    [output] = job["outputs"]
    data = written(large, prefix)
    url = f"/api/v2/assets/{output['id']}/content"
    whole = client.get(url)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-length"] == str(len(data))
    start, end = (3 << 18) - 5, (3 << 19) + 17  # across the gateway's pieces
    part = client.get(url, headers={"Range": f"bytes={start}-{end}"})
    assert part.status_code == 206 and part.content == data[start : end + 1]
    assert part.headers["content-range"] == f"bytes {start}-{end}/{len(data)}"
    tail = client.get(url, headers={"Range": "bytes=-100"})
    assert tail.status_code == 206 and tail.content == data[-100:]
    head = client.head(url)
    assert head.status_code == 200 and head.headers["content-length"] == str(len(data))

    # Used as an input, the output is over INPUT_MAX_MB: refused before its base64 is built.
    reference = {"__type": "core/ASSET", "info": {"id": output["id"]}}
    graph = noise_graph(unique("v2again"))
    graph["1"]["inputs"]["image"] = reference
    refused = client.post("/api/v2/jobs", json={"workflow": graph})
    assert refused.status_code == 422, refused.text
    assert "INPUT_MAX_MB" in refused.text and output["id"] in refused.text
