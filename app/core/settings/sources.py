"""Where settings come from besides the environment (a YAML file), and how bad ones are told."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

# What pydantic reads as a boolean, for settings that were booleans once.
BOOL_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
BOOL_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


class SettingsError(Exception):
    """A setting has a value the gateway cannot run with; the message names it."""


def empty_is_unset(value: Any) -> Any:
    """`SETTING=` (empty) means the setting is not set, for optional settings."""
    return None if value == "" else value


class YamlConfigSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by CONFIG_FILE; keys are the environment variable names."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = os.environ.get("CONFIG_FILE")
        self.data: dict[str, Any] = {}
        if not path:
            return
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as e:
            raise SettingsError(f"CONFIG_FILE={path!r} cannot be read: {e}") from e
        if loaded is None:
            return
        if not isinstance(loaded, dict):
            raise SettingsError(f"CONFIG_FILE={path!r} must hold a mapping of SETTING: value")
        self.data = {str(k).lower(): v for k, v in loaded.items()}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        known = set(self.settings_cls.model_fields)
        return {k: v for k, v in self.data.items() if k in known}
