#!/usr/bin/env python3
"""No module of app/ is longer than 300 lines (physical lines, comments and docstrings
included): a module past that holds more than one thing, and is split where its seams are.

`make check` runs this. usage: check_module_size.py [DIR...] (default: app)
"""

from __future__ import annotations

import sys
from pathlib import Path

MAX_LINES = 300


def too_long(root: Path) -> list[tuple[Path, int]]:
    """Every module under root over MAX_LINES, with its length."""
    found = []
    for path in sorted(root.rglob("*.py")):
        with path.open("rb") as f:
            lines = sum(1 for _ in f)
        if lines > MAX_LINES:
            found.append((path, lines))
    return found


def main(folders: list[str]) -> int:
    found = [hit for folder in folders or ["app"] for hit in too_long(Path(folder))]
    for path, lines in found:
        print(f"{path}: {lines} lines, over {MAX_LINES}: split it along a seam", file=sys.stderr)
    if found:
        return 1
    print(f"modules: none over {MAX_LINES} lines ({', '.join(folders or ['app'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
