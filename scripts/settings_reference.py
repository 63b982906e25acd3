#!/usr/bin/env python3
"""Write docs/settings.md, the settings reference, from the Settings model itself.

    .venv/bin/python scripts/settings_reference.py          # (make docs) rewrite the file
    .venv/bin/python scripts/settings_reference.py --check  # exit 1 if the file is stale

Each section of app.core.settings is one table: the variable, its default and its description,
so the reference can never drift from what the gateway reads.
"""

from __future__ import annotations

import argparse
import enum
import sys
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

# This checkout's app, whatever the environment's editable install points at.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.core.settings import PROJECT_ROOT, SECTIONS

TARGET = PROJECT_ROOT / "docs" / "settings.md"
HEAD = """# Settings

<!-- Generated from app/core/settings by `make docs` (scripts/settings_reference.py): edit the
Field descriptions there, not this file. A unit test fails when this file is stale. -->

Every setting is an environment variable (names as in SaladTechnologies' comfyui-api), or a key
of the YAML file named by `CONFIG_FILE` (the environment wins). A bad value stops start-up with
one line that names the variable and what is allowed, and exit code 2. Units are in the names:
`_S` seconds, `_MB` megabytes. An empty value (`SETTING=`) leaves an optional setting unset.
"""


def shown_default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "from the environment"
    value: Any = field.default
    if value is PydanticUndefined or value is None or value in ((), frozenset(), {}):
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, enum.Enum):
        return f"`{value.value}`"
    if isinstance(value, Path):
        try:
            return f"`{value.relative_to(PROJECT_ROOT)}`"
        except ValueError:
            return f"`{value}`"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return f"`{value}`" if isinstance(value, str) else str(value)


def reference() -> str:
    parts = [HEAD]
    for section in SECTIONS:
        title = (section.__doc__ or section.__name__).strip().splitlines()[0].rstrip(".")
        parts.append(f"\n## {title}\n\n| variable | default | meaning |\n|---|---|---|\n")
        for name, field in section.model_fields.items():
            description = (field.description or "").replace("|", "\\|")
            parts.append(f"| `{name.upper()}` | {shown_default(field)} | {description} |\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/settings.md is stale")
    args = parser.parse_args(argv)
    text = reference()
    if args.check:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET} is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    TARGET.parent.mkdir(exist_ok=True)
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
