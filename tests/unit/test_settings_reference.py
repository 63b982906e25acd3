"""docs/settings.md is generated from the Settings model; a stale copy fails here."""

from __future__ import annotations

import importlib.util

from app.core.settings import PROJECT_ROOT, Settings

spec = importlib.util.spec_from_file_location(
    "settings_reference", PROJECT_ROOT / "scripts" / "settings_reference.py"
)
assert spec is not None and spec.loader is not None
reference = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reference)


def test_the_committed_reference_is_current() -> None:
    assert reference.main(["--check"]) == 0, "docs/settings.md is stale: run `make docs`"


def test_every_setting_is_in_it_with_a_description() -> None:
    text = reference.reference()
    for name, field in Settings.model_fields.items():
        assert f"| `{name.upper()}` |" in text
        assert field.description, f"{name} has no description"
