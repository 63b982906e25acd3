"""The registry: which files become which routes; a broken module stops start-up, named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.core.settings import PROJECT_ROOT, load_settings
from app.main import create_app
from app.registry.load import Registry, WorkflowLoadError, discover

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_files_map_to_routes_folders_and_all() -> None:
    registry = Registry.load(FIXTURES / "workflows_ok")
    routes = [w.route for w in registry.workflows]
    # _helpers.py and _drafts/ would raise if imported: they are skipped, not loaded
    assert routes == [
        "/workflows/errors/boom",
        "/workflows/missing/custom_node",
        "/workflows/nested/deeper/leaf",
        "/workflows/top",
    ]


@pytest.mark.parametrize(
    ("name", "summary", "description"),
    [
        ("top", "A red square.", "Fills an image with one color and saves it."),
        (
            "nested/deeper/leaf",
            "Text to image, three folders deep",
            "Uses every kind of choice: a checkpoint, LoRAs in a list of models, samplers.",
        ),
    ],
)
def test_summary_and_description_from_the_module_or_its_docstring(
    name: str, summary: str, description: str
) -> None:
    workflow = next(w for w in Registry.load(FIXTURES / "workflows_ok").workflows if w.name == name)
    assert workflow.summary == summary
    assert workflow.description.startswith(description)


@pytest.mark.parametrize(
    ("folder", "module", "reason"),
    [
        ("workflows_import_error", "bad.py", "import failed: ModuleNotFoundError"),
        ("workflows_no_generate", "sub/x.py", "defines no generate_workflow"),
        ("workflows_no_schema", "x.py", "defines no RequestSchema"),
        ("workflows_schema_not_model", "x.py", "defines no RequestSchema"),
        ("workflows_generate_arity", "x.py", "generate_workflow must take one argument"),
        ("workflows_no_example", "x.py", "field 'prompt' is required but has no example"),
        ("workflows_example_fails", "x.py", "ZeroDivisionError: division by zero"),
        ("workflows_bad_graph", "x.py", "node '1' has no class_type"),
        ("workflows_duplicate", "same/x.py", "maps to the same route as"),
    ],
)
def test_a_broken_module_stops_create_app_naming_its_path(
    folder: str, module: str, reason: str
) -> None:
    with pytest.raises(WorkflowLoadError) as error:
        create_app(load_settings(workflow_dir=FIXTURES / folder))
    message = str(error.value)
    assert message.startswith(f"{FIXTURES / folder / module}: ")
    assert reason in message


def test_duplicate_route_names_both_modules() -> None:
    with pytest.raises(WorkflowLoadError) as error:
        Registry.load(FIXTURES / "workflows_duplicate")
    assert str(FIXTURES / "workflows_duplicate" / "Same" / "x.py") in str(error.value)


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ({"ok.py": "def broken(:\n"}, "import failed: SyntaxError"),
        ({"two words.py": ""}, "'two words' cannot be part of a route"),
    ],
)
def test_unimportable_or_unroutable_files(
    tmp_path: Path, files: dict[str, str], reason: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(WorkflowLoadError, match=reason) as error:
        Registry.load(tmp_path)
    assert str(error.value).startswith(str(tmp_path / next(iter(files))))


def test_missing_workflow_dir_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(WorkflowLoadError, match=r"WORKFLOW_DIR=.*is not a folder"):
        Registry.load(tmp_path / "nope")


@pytest.mark.parametrize("folder", ["workflows_import_error", "workflows_duplicate"])
def test_the_gateway_exits_2_with_one_line_naming_the_module(folder: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "WORKFLOW_DIR": str(FIXTURES / folder), "PORT": "3999"}
    done = subprocess.run(
        [sys.executable, "-m", "app"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"comfy-gateway: {FIXTURES / folder}")
    assert "ComfyUI" not in done.stderr  # it never got as far as starting ComfyUI


def test_the_shipped_workflows_load() -> None:
    names = [name for name, _ in discover(PROJECT_ROOT / "workflows")]
    assert names == [
        "cogvideox/img2video",
        "flux/schnell-txt2img",
        "ltx/txt2video",
        "pony/txt2img",
        "sd15/img2img",
        "sd15/inpaint",
        "sd15/txt2img",
        "sdxl/img2img",
        "sdxl/txt2img",
        "upscale/image",
    ]
    assert len(Registry.load(PROJECT_ROOT / "workflows").workflows) == len(names)


def test_a_comfyui_api_workflow_module_is_named_not_silently_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "sd15").mkdir()
    (tmp_path / "sd15" / "txt2img.ts").write_text("export default {};\n")
    (tmp_path / "img2img.py").write_text("")
    with caplog.at_level("WARNING"):
        found = discover(tmp_path)
    assert [name for name, _ in found] == ["img2img"]
    assert "txt2img.ts: a comfyui-api workflow" in caplog.text
    assert "Python module" in caplog.text
