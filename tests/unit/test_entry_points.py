"""The entry points: `[project.scripts]` names callables that exist, the CLI runs as a module
without an install, and the plugin API (app.workflow_types) is documented name by name."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib

import app.workflow_types
from app.core.settings import PROJECT_ROOT


def test_every_script_names_a_callable() -> None:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    scripts = project["scripts"]
    assert set(scripts) == {"comfy-gateway", "comfy-gateway-cli"}
    for target in scripts.values():
        module, _, name = target.partition(":")
        assert callable(getattr(importlib.import_module(module), name)), target


def test_the_cli_runs_as_a_module_with_its_three_commands() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.tools.cli", "--help"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "usage: comfy-gateway-cli" in done.stdout
    assert "{run,models,scaffold}" in done.stdout


def test_each_public_name_of_the_plugin_api_is_documented() -> None:
    docs = (PROJECT_ROOT / "docs" / "workflows.md").read_text()
    for name in app.workflow_types.__all__:
        assert hasattr(app.workflow_types, name)
        assert f"`{name}`" in docs, f"docs/workflows.md does not document {name}"
