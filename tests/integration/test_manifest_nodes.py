"""comfyui-api's manifest against a real ComfyUI: a custom node from a real local git repository
(file://, never the network), pinned by a ref, installed before ComfyUI starts, listed in
/health with its commit, and run in a graph. The gateway works on its own copy of COMFY_HOME
(25 MB), so the shared ComfyUI's custom_nodes folder is never touched."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

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


NODE_CLASS_MAPPINGS = {"GatewayTestInvert": GatewayTestInvert}
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
