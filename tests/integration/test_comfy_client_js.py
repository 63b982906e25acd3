"""ComfyClient.mjs, the JS client of the deployment this gateway was first written for, unchanged.

It runs under Node with `http://gateway/comfy` as its base URL: upload, submit, progress over its
websocket (which it opens at `ws://<host>/ws`, the base URL's path dropped), polling /history,
download.
The client is read from ../shared/clients/ComfyClient.mjs, never copied here; the driver is
tests/node/run_comfy_client.mjs, and `make node` (which `make test` runs) installs its `ws`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.harness import ROOT, Gateway
from tests.integration.test_compat_comfy import img2img_graph, png

CLIENT = ROOT.parent / "shared" / "clients" / "ComfyClient.mjs"
NODE_DIR = ROOT / "tests" / "node"
DRIVER = NODE_DIR / "run_comfy_client.mjs"


def run_client(base_url: str, image: Path, graph_file: Path) -> dict[str, Any]:
    if not CLIENT.exists():
        pytest.skip(f"{CLIENT} is missing (CI has it): the test reads the client from there")
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the client needs Node 20 or later")
    if not (NODE_DIR / "node_modules" / "ws").is_dir():
        pytest.fail("the ws package is missing: run `make node` (make test does)")
    done = subprocess.run(
        [node, str(DRIVER), str(CLIENT), base_url, str(image), str(graph_file)],
        capture_output=True,
        text=True,
        timeout=110,
    )
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, f"driver failed:\n{done.stdout}\n{done.stderr}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def test_comfy_client_js_runs_a_graph_through_the_passthrough(
    gateway: Gateway, tmp_path: Path
) -> None:
    name = f"node-client-{uuid.uuid4().hex[:8]}.png"
    (tmp_path / name).write_bytes(png(64, 64))
    graph = img2img_graph("<uploaded>")
    graph["7"]["inputs"]["filename_prefix"] = prefix = f"node_client_{uuid.uuid4().hex[:8]}"
    (tmp_path / "graph.json").write_text(json.dumps(graph))
    try:
        result = run_client(f"{gateway.url}/comfy", tmp_path / name, tmp_path / "graph.json")
        # Its FormData upload, with the subfolder and type fields it always sends.
        assert result["upload"] == {"name": name, "subfolder": "input", "type": "input"}
        assert result["submitted"]["node_errors"] == {}
        prompt_id = result["submitted"]["prompt_id"]
        # Its socket has no clientId and its prompt no client_id: ComfyUI sends the prompt's
        # progress to every socket, so through the gateway's /ws to this one.
        assert result["progress"] == [[1, 2], [2, 2]]
        assert result["status"]["completed"] is True
        assert result["status"]["status_str"] == "success"
        (file,) = result["files"]
        assert file["type"] == "image"
        assert file["filename"].startswith(prefix)
        assert file["url"].startswith(f"{gateway.url}/comfy/view?")
        on_disk = (gateway.output_dir / file["filename"]).read_bytes()
        assert result["downloaded"] == [
            {
                "size": len(on_disk),
                "type": "image/png",
                "sha256": hashlib.sha256(on_disk).hexdigest(),
            }
        ]
        # ComfyUI ran the graph on the uploaded image, as the client sent it.
        history = httpx.get(f"{gateway.comfy_url}/history/{prompt_id}").json()[prompt_id]
        assert history["prompt"][2]["8"]["inputs"]["image"] == f"input/{name}"
    finally:
        # ComfyUI's own files, which the gateway leaves alone under /comfy: the other tests
        # sharing this gateway expect an empty output folder.
        for output in gateway.output_dir.glob(f"{prefix}*"):
            output.unlink()
        (gateway.input_dir / "input" / name).unlink(missing_ok=True)
