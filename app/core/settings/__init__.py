"""Settings: every environment variable the gateway reads, typed and validated.

Names follow SaladTechnologies' comfyui-api so deployments can switch without renaming. Values
come from the environment, then from the YAML file named by `CONFIG_FILE` (environment wins).
Each section (one module here) groups the settings of one part of the gateway; `SECTIONS` keeps
their order for the generated reference (docs/settings.md, `make docs`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from app.core.settings.azure import AzureSettings
from app.core.settings.cache import CacheSettings
from app.core.settings.comfyui import BUNDLED_COMFY_DIR, PROJECT_ROOT, ComfySettings
from app.core.settings.fleet import FleetSettings
from app.core.settings.jobs import JobSettings
from app.core.settings.media import MediaSettings
from app.core.settings.models import ModelSettings
from app.core.settings.passthrough import PassthroughSettings
from app.core.settings.server import LogFormat, LogLevel, PassthroughMode, ServerSettings
from app.core.settings.sources import SettingsError, YamlConfigSource
from app.core.settings.tenants import TenantSettings
from app.core.settings.theirs import their_settings
from app.core.settings.webhooks import SYSTEM_EVENT_TYPES, WebhookSettings

__all__ = [
    "BUNDLED_COMFY_DIR",
    "PROJECT_ROOT",
    "SECTIONS",
    "SYSTEM_EVENT_TYPES",
    "LogFormat",
    "LogLevel",
    "PassthroughMode",
    "Settings",
    "SettingsError",
    "die_on_bad_settings",
    "load_settings",
    "their_settings",
]

SECTIONS = (
    ServerSettings,
    PassthroughSettings,
    TenantSettings,
    ComfySettings,
    JobSettings,
    CacheSettings,
    MediaSettings,
    AzureSettings,
    ModelSettings,
    WebhookSettings,
    FleetSettings,
)
# Settings whose values an error message must not repeat.
SECRET_SETTINGS = frozenset(
    {
        "API_KEYS",
        "ADMIN_API_KEYS",
        "WEBHOOK_SECRET",
        "QUEUE_URL",
        "FLEET_SECRET",
        "MODEL_CREDENTIALS",
        "HF_TOKEN",
        "CIVITAI_TOKEN",
        "HTTP_UPLOAD_AUTH_HEADER",
        "HTTP_AUTH_HEADER_VALUE",
        "AZURE_STORAGE_CONNECTION_STRING",
        "AZURE_STORAGE_KEY",
        "AZURE_STORAGE_SAS_TOKEN",
    }
)


class Settings(
    BaseSettings,
    FleetSettings,
    WebhookSettings,
    ModelSettings,
    AzureSettings,
    MediaSettings,
    CacheSettings,
    JobSettings,
    ComfySettings,
    TenantSettings,
    PassthroughSettings,
    ServerSettings,
):
    """The gateway's configuration. Units are in the names (`_s`, `_mb`).

    Validator names must differ between sections: one of the same name would hide another.
    """

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, YamlConfigSource(settings_cls))

    @property
    def model_cache_path(self) -> Path:
        """Where downloads go: MODEL_CACHE_DIR, else MODEL_DIR, else ComfyUI's own models."""
        return self.model_cache_dir or self.model_dir or self.comfy_home / "models"

    @property
    def api_keys_on(self) -> bool:
        """Requests need a key, and each key is a tenant that sees only its own jobs."""
        return bool(self.api_keys or self.api_keys_file is not None or self.admin_api_keys)

    @model_validator(mode="after")
    def _limits_need_keys(self) -> Settings:
        if self.key_limits and not self.api_keys_on:
            raise ValueError(
                "KEY_LIMITS limits each API key: set API_KEYS, API_KEYS_FILE or ADMIN_API_KEYS"
            )
        return self

    @model_validator(mode="after")
    def _ports_differ(self) -> Settings:
        ports = range(self.comfyui_port_host, self.comfyui_port_host + self.instance_count)
        if self.port in ports:
            raise ValueError(
                f"PORT must differ from the ComfyUI ports (COMFYUI_PORT_HOST {ports.start} to "
                f"{ports.stop - 1}, one per instance)"
            )
        if ports.stop > 65536:
            raise ValueError("COMFYUI_PORT_HOST + the instance count runs past port 65535")
        return self

    @model_validator(mode="after")
    def _instances_agree(self) -> Settings:
        if self.comfyui_gpus and self.comfyui_instances not in (1, len(self.comfyui_gpus)):
            raise ValueError(
                f"COMFYUI_INSTANCES={self.comfyui_instances} but COMFYUI_GPUS names "
                f"{len(self.comfyui_gpus)} GPU(s): set one of them (one instance per GPU)"
            )
        if self.cmd and self.instance_count > 1 and "{port}" not in self.cmd:
            raise ValueError(
                "CMD must contain {port} when several ComfyUI instances run: each listens on its "
                "own port (and may use {gpu} and {index})"
            )
        return self


def load_settings(**overrides: Any) -> Settings:
    """Build Settings (comfyui-api's names mapped onto ours first: app.core.settings.theirs),
    turning validation failures into one line per bad variable."""
    overrides = {**their_settings(os.environ).values, **overrides}
    try:
        return Settings(**overrides)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            message = err["msg"].removeprefix("Value error, ")
            if not err["loc"]:  # a rule across settings: its message names them
                lines.append(f"invalid settings: {message}")
                continue
            name = str(err["loc"][0]).upper()
            given = err.get("input")
            secret = name in SECRET_SETTINGS
            shown = f"={given!r}" if not isinstance(given, dict) and not secret else ""
            if err["type"].startswith("bool"):
                message += " (true/false, 1/0, yes/no, on/off)"
            lines.append(f"invalid setting {name}{shown}: {message}")
        raise SettingsError("; ".join(lines)) from None


def die_on_bad_settings(error: SettingsError) -> None:
    print(f"comfy-gateway: {error}", file=sys.stderr)
    raise SystemExit(2)
