"""scripts/check_workflow_imports.py: a workflow module may import app.workflow_types, pydantic,
the standard library and its own `_helpers`, and nothing else of the gateway's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.core.settings import PROJECT_ROOT

CHECK = PROJECT_ROOT / "scripts" / "check_workflow_imports.py"


def check(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHECK), str(folder)], capture_output=True, text=True)


def test_the_shipped_workflows_pass() -> None:
    done = check(PROJECT_ROOT / "workflows")
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize(
    "line",
    [
        "from app.registry.fields import Checkpoint",
        "import httpx",
        "from app.gateway import Gateway",
    ],
)
def test_an_import_of_anything_else_fails(tmp_path: Path, line: str) -> None:
    (tmp_path / "flow.py").write_text(f"import random\nfrom pydantic import BaseModel\n{line}\n")
    done = check(tmp_path)
    assert done.returncode == 1
    assert "flow.py:3" in done.stdout


def test_allowed_imports_pass(tmp_path: Path) -> None:
    (tmp_path / "flow.py").write_text(
        "from __future__ import annotations\nimport random\nfrom typing import Literal\n"
        "from pydantic import BaseModel, Field\nfrom app.workflow_types import Checkpoint\n"
        "from _helpers import sampler\n"
    )
    assert check(tmp_path).returncode == 0
