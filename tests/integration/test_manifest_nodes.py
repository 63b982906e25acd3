"""comfyui-api's manifest against a real ComfyUI: a custom node from a real local git repository
(file://, never the network), pinned by a ref, installed before ComfyUI starts, listed in
/health with its commit, and run in a graph. The gateway works on its own copy of COMFY_HOME
(25 MB), so the shared ComfyUI's custom_nodes folder is never touched."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.integration.harness import COMFY_HOME, Gateway

NODE = """
class GatewayTestInvert:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "testing"

    def run(self, image):
        return (1.0 - image,)


# An image whose colour is the first bytes of the SHA-256 of the partner-node key ComfyUI
# handed in (black without one): the key's arrival, seen without the key.
class GatewayTestPartnerKey:

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}, "hidden": {"key": "API_KEY_COMFY_ORG"}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "testing"

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")  # run every time: ComfyUI's cache does not know the hidden key

    def run(self, key=None):
        import hashlib

        import torch

        rgb = hashlib.sha256(key.encode()).digest()[:3] if key else bytes(3)
        return (torch.tensor([c / 255 for c in rgb]).expand(1, 8, 8, 3).clone(),)


NODE_CLASS_MAPPINGS = {"GatewayTestInvert": GatewayTestInvert,
                       "GatewayTestPartnerKey": GatewayTestPartnerKey}
"""
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True,
                          env={**os.environ, **GIT_ENV})  # fmt: skip
    return done.stdout.strip()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, str]]:
    work = tmp_path_factory.mktemp("manifest")
    repo = work / "repos" / "gateway-test-node"
    repo.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=repo)
    (repo / "__init__.py").write_text(NODE)
    (repo / "requirements.txt").write_text("PyYAML\n")  # ComfyUI's own: pip needs no network
    git("add", ".", cwd=repo)
    git("commit", "-q", "-m", "v1", cwd=repo)
    git("tag", "v1", cwd=repo)
    (repo / "__init__.py").write_text("raise ImportError('not the pinned version')\n")
    git("commit", "-q", "-am", "broken", cwd=repo)
    # COMFY_HOME of its own beside the shared environment (CommandLine.python looks there)
    home = work / "comfy" / "ComfyUI"
    shutil.copytree(COMFY_HOME, home, ignore=shutil.ignore_patterns(".git", "__pycache__"))
    (work / "comfy" / "venv").symlink_to(COMFY_HOME.parent / "venv")
    manifest = {"custom_nodes": [f"file://{repo}@v1"], "models": {"before_start": []}}
    started = Gateway(work, COMFY_HOME=str(home), MANIFEST_JSON=json.dumps(manifest))
    try:
        started.start(timeout_s=600)
        yield started, git("rev-parse", "v1", cwd=repo)
    finally:
        started.stop()


def test_the_node_is_installed_at_its_ref_and_listed_in_health(
    gateway: tuple[Gateway, str],
) -> None:
    started, v1 = gateway
    with started.client() as client:
        health = client.get("/health").json()
    assert health["custom_nodes"] == [
        {"name": "gateway-test-node", "url": health["custom_nodes"][0]["url"], "ref": "v1",
         "commit": v1}
    ]  # fmt: skip
    assert health["custom_nodes"][0]["url"].startswith("file://")


def test_a_graph_runs_the_installed_node(gateway: tuple[Gateway, str]) -> None:
    started, _ = gateway
    prompt = {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "GatewayTestInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "inv"}},
    }  # fmt: skip
    with started.client() as client:
        response = client.post("/prompt", json={"prompt": prompt})
    assert response.status_code == 200, response.text[:500]
    [image] = response.json()["images"]
    with Image.open(io.BytesIO(base64.b64decode(image))) as decoded:
        assert decoded.convert("RGB").getpixel((10, 10)) == (255, 255, 255)  # black, inverted


PARTNER_KEY = "comfyui-" + "5e" * 24
KEY_GRAPH = {
    "1": {"class_type": "GatewayTestPartnerKey", "inputs": {}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "key"}},
}


def colour(image_b64: str) -> tuple[int, ...]:
    with Image.open(io.BytesIO(base64.b64decode(image_b64))) as decoded:
        return tuple(decoded.convert("RGB").getpixel((4, 4)))


def test_the_partner_key_reaches_comfyuis_nodes_and_nothing_else(
    gateway: tuple[Gateway, str],
) -> None:
    """`api_key_comfy_org` on /prompt, and `extra_data.api_key_comfy_org` on v2 and ComfyUI's
    own /prompt, reach the node's hidden input; the gateway never says it: not in its answers,
    its job's state and events, ComfyUI's history as the gateway serves it, or its log."""
    started, _ = gateway
    expected = tuple(hashlib.sha256(PARTNER_KEY.encode()).digest()[:3])
    heard: list[str] = []
    with started.client() as client:
        body = {"prompt": KEY_GRAPH, "id": "keyed", "api_key_comfy_org": PARTNER_KEY}
        answer = client.post("/prompt", json=body)
        assert answer.status_code == 200, answer.text[:500]
        assert colour(answer.json()["images"][0]) == expected
        plain = client.post("/prompt", json={"prompt": KEY_GRAPH, "id": "plain"})
        assert colour(plain.json()["images"][0]) == (0, 0, 0)  # without it: no key at all
        heard += [answer.text, client.get("/prompt/keyed").text]
        heard.append(client.get("/prompt/keyed/events").text)
        # v2: the job's output, once it succeeded
        v2 = client.post(
            "/api/v2/jobs",
            json={"workflow": KEY_GRAPH, "extra_data": {"api_key_comfy_org": PARTNER_KEY}},
        )
        assert v2.status_code == 201, v2.text
        job = v2.json()["id"]
        for _ in range(600):
            state = client.get(f"/api/v2/jobs/{job}").json()
            if state["status"] in ("succeeded", "failed", "canceled", "expired"):
                break
            time.sleep(0.1)
        assert state["status"] == "succeeded", state
        [output] = state["outputs"]
        content = client.get(httpx.URL(output["url"]).path)
        assert content.status_code == 200
        with Image.open(io.BytesIO(content.content)) as decoded:
            assert tuple(decoded.convert("RGB").getpixel((4, 4))) == expected
        heard += [v2.text, json.dumps(state)]
        # ComfyUI's own /prompt, through the passthrough: extra_data goes on as it is
        raw = client.post(
            "/comfy/prompt",
            json={"prompt": KEY_GRAPH, "extra_data": {"api_key_comfy_org": PARTNER_KEY}},
        )
        assert raw.status_code == 200, raw.text
        prompt_id = raw.json()["prompt_id"]
        for _ in range(600):
            history = client.get(f"/comfy/history/{prompt_id}").json()
            if history.get(prompt_id, {}).get("status", {}).get("completed"):
                break
            time.sleep(0.1)
        [saved] = history[prompt_id]["outputs"]["2"]["images"]
        view = client.get("/comfy/view", params=saved)
        with Image.open(io.BytesIO(view.content)) as decoded:
            assert tuple(decoded.convert("RGB").getpixel((4, 4))) == expected
        heard += [raw.text, json.dumps(history), client.get("/comfy/queue").text]
        bad = client.post("/prompt", json={**body, "api_key_comfy_org": "no spaces " + "x" * 8})
    assert bad.status_code == 400 and bad.json()["location"] == "api_key_comfy_org"
    heard += [bad.text, started.log_text()]
    assert all(PARTNER_KEY not in text for text in heard)
    assert "no spaces" not in bad.text
