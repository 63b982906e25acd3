"""The command-line client against a real gateway: progress, outputs on disk, exit status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.integration.harness import ROOT, Gateway, graph


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.tools.cli", "run", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_cli_runs_a_graph_shows_progress_and_writes_outputs(
    gateway: Gateway, tmp_path: Path
) -> None:
    prompt = graph("t2i")
    prompt["5"]["inputs"].update(steps=5, seed=51)
    graph_file = tmp_path / "graph.json"
    graph_file.write_text(json.dumps(prompt))
    out, previews = tmp_path / "out", tmp_path / "previews"
    done = cli(
        "--url", gateway.url, "--graph", str(graph_file), "--out", str(out), "--id", "cli-1",
        "--previews", str(previews),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [written] = [Path(line) for line in done.stdout.splitlines()]
    assert written.parent == out
    with Image.open(written) as image:
        assert image.size == (64, 64)
    assert "step 5/5 KSampler" in done.stderr  # the node by its name, not its id
    assert "executing VAEDecode" in done.stderr
    assert "queued" in done.stderr
    # the newest latent preview, written whole
    assert [p.name for p in previews.iterdir()] == ["preview.jpg"]
    with Image.open(previews / "preview.jpg") as preview:
        assert preview.format == "JPEG" and preview.width == preview.height


def test_cli_reports_a_failed_job(gateway: Gateway, tmp_path: Path) -> None:
    graph_file = tmp_path / "fail.json"
    graph_file.write_text(json.dumps(graph("g3_exec_error")))
    done = cli("--url", gateway.url, "--graph", str(graph_file), "--out", str(tmp_path / "o"))
    assert done.returncode == 1
    assert "execution_failed" in done.stderr
    assert "ImageToMask" in done.stderr
    assert not (tmp_path / "o").exists()


def test_cli_reports_a_refused_request(gateway: Gateway, tmp_path: Path) -> None:
    graph_file = tmp_path / "bad.json"
    graph_file.write_text(json.dumps(graph("g4_validation_error")))
    done = cli("--url", gateway.url, "--graph", str(graph_file))
    assert done.returncode == 1
    assert "HTTP 400" in done.stderr
    assert "prompt.1.inputs.width" in done.stderr


def test_cli_without_a_gateway_says_so() -> None:
    done = cli(
        "--url", "http://127.0.0.1:9", "--graph", str(ROOT / "tests/graphs/g1_empty_save.json")
    )
    assert done.returncode == 1
    assert "cannot reach the gateway" in done.stderr
