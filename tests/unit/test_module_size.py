"""scripts/check_module_size.py: no module of app/ is over 300 lines; one that is fails
`make check`, named with its length."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from app.core.settings import PROJECT_ROOT

CHECK = PROJECT_ROOT / "scripts" / "check_module_size.py"


def check(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHECK), str(folder)], capture_output=True, text=True)


def test_every_module_of_app_passes() -> None:
    done = check(PROJECT_ROOT / "app")
    assert done.returncode == 0, done.stderr


def test_a_module_over_300_lines_fails_and_is_named(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "fits.py").write_text("x = 1\n" * 300)
    (tmp_path / "pkg" / "long.py").write_text("x = 1\n" * 301)
    done = check(tmp_path)
    assert done.returncode == 1
    assert "long.py: 301 lines" in done.stderr
    assert "fits.py" not in done.stderr
