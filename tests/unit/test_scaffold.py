"""Scaffold: each test graph becomes a module that loads and rebuilds the graph by default."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.comfy.catalog import Catalog
from app.registry.fields import ComfyChoice
from app.registry.load import Registry, load_workflow
from app.tools.cli import main
from app.tools.scaffold import scaffold

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
CATALOG = Catalog.from_file(FIXTURES / "object_info.json")
GRAPHS = sorted((ROOT / "tests" / "graphs").glob("*.json"))


def written(tmp_path: Path, graph: Path) -> Path:
    module = tmp_path / "scaffolded" / f"{graph.stem}.py"
    module.parent.mkdir(exist_ok=True)
    module.write_text(scaffold(json.loads(graph.read_text()), CATALOG, "A test graph."))
    return module


@pytest.mark.parametrize("graph", GRAPHS, ids=lambda p: p.stem)
def test_the_module_rebuilds_the_graph_from_its_defaults(tmp_path: Path, graph: Path) -> None:
    workflow = load_workflow(graph.stem, written(tmp_path, graph))
    rebuilt = workflow.generate(workflow.schema())
    assert rebuilt == json.loads(graph.read_text())


def test_literal_inputs_become_typed_described_fields(tmp_path: Path) -> None:
    workflow = load_workflow("t2i", written(tmp_path, ROOT / "tests" / "graphs" / "t2i.json"))
    fields = workflow.schema.model_fields
    assert list(fields) == [
        "ckpt_name", "text_2", "text_3", "width", "height", "batch_size", "seed", "steps",
        "cfg", "sampler_name", "scheduler", "denoise", "filename_prefix",
    ]  # fmt: skip
    choices = {
        name: next(m.kind for m in info.metadata if isinstance(m, ComfyChoice))
        for name, info in fields.items()
        if any(isinstance(m, ComfyChoice) for m in info.metadata)
    }
    assert choices == {
        "ckpt_name": "checkpoint",
        "sampler_name": "sampler",
        "scheduler": "scheduler",
    }
    steps = workflow.schema.model_json_schema()["properties"]["steps"]
    assert (steps["type"], steps["minimum"], steps["maximum"], steps["default"]) == (
        "integer", 1, 10000, 2,
    )  # fmt: skip
    assert steps["description"].startswith("KSampler.steps (node 5): The number of steps")


def test_combo_inputs_become_literals_and_uploads_input_images(tmp_path: Path) -> None:
    module = written(tmp_path, ROOT / "tests" / "graphs" / "g2_load_scale_invert_save.json")
    source = module.read_text()
    assert 'crop: Literal["disabled", "center"] = Field("disabled",' in source
    assert "image: InputImage = Field(" in source
    workflow = load_workflow("g2", module)
    schema: dict[str, Any] = workflow.schema.model_json_schema()
    assert schema["properties"]["upscale_method"]["enum"][0] == "nearest-exact"


def test_the_scaffolded_workflow_is_available_with_the_live_enums(tmp_path: Path) -> None:
    written(tmp_path, ROOT / "tests" / "graphs" / "lora.json")
    registry = Registry.load(tmp_path)
    registry.activate(CATALOG, None)
    (workflow,) = registry.workflows
    assert workflow.route == "/workflows/scaffolded/lora"
    assert workflow.reasons == []
    assert workflow.input_model is not None
    lora = workflow.input_model.model_json_schema()["properties"]["lora_name"]
    assert lora["enum"] == ["tiny-lora.safetensors"]


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "workflows" / "mine" / "t2i.py"
    args = ["scaffold", str(ROOT / "tests" / "graphs" / "t2i.json"), str(out)]
    assert main([*args, "--object-info", str(FIXTURES / "object_info.json")]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    with pytest.raises(SystemExit) as refused:  # no overwriting without --force
        main([*args, "--object-info", str(FIXTURES / "object_info.json")])
    assert refused.value.code == 2
    assert "exists" in capsys.readouterr().err
    assert main([*args, "--object-info", str(tmp_path / "missing.json"), "--force"]) == 1
    assert "missing.json" in capsys.readouterr().err
