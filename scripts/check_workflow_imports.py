#!/usr/bin/env python3
"""Workflow modules import only app.workflow_types, pydantic, the standard library and helper
modules of their own folder (a name starting with `_`).

A workflow module that reaches into the gateway's internals would break with every refactor;
`make check` runs this so such an import fails CI. usage: check_workflow_imports.py [DIR...]
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ALLOWED = {"app.workflow_types", "pydantic"}


def problems(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: a helper beside it
                continue
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if name in ALLOWED or top == "pydantic" or top.startswith("_"):
                continue
            if top in sys.stdlib_module_names or top == "__future__":
                continue
            found.append(f"{path}:{node.lineno}: imports {name}; workflow modules may import only "
                         "app.workflow_types, pydantic and the standard library")  # fmt: skip
    return found


def main(folders: list[str]) -> int:
    found = [
        p for folder in folders for f in sorted(Path(folder).rglob("*.py")) for p in problems(f)
    ]
    print("\n".join(found) or f"workflow modules: only allowed imports ({', '.join(folders)})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["workflows"]))
