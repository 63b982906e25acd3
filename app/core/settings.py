"""Settings: every environment variable the gateway reads, typed and validated.

Names follow SaladTechnologies' comfyui-api so deployments can switch without renaming. Values
come from the environment, then from the YAML file named by `CONFIG_FILE` (environment wins).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    Field,
    HttpUrl,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from app.compat.passthrough import PassthroughMode
from app.core.keys import key_problem, read_key_file, split_keys

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Where `make comfyui` installs the bundled ComfyUI; other versions go beside it.
BUNDLED_COMFY_DIR = PROJECT_ROOT / ".comfyui" / "0.3.75"

LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LogFormat = Literal["text", "json"]
# Settings whose values an error message must not repeat.
SECRET_SETTINGS = frozenset({"API_KEYS", "WEBHOOK_SECRET"})
SYSTEM_EVENT_TYPES = frozenset(
    {
        "status", "progress", "progress_state", "executing", "execution_start", "execution_cached",
        "executed", "execution_success", "execution_interrupted", "execution_error",
    }
)  # fmt: skip


# What a browser sends in Origin: scheme://host[:port], nothing after.
ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://(\[[0-9a-fA-F:.]+\]|[^/:\s\[\]]+)(:\d{1,5})?")
DEFAULT_PORTS = {"https": ":443", "http": ":80"}
# What pydantic reads as a boolean, for settings that were booleans once.
BOOL_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
BOOL_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


class SettingsError(Exception):
    """A setting has a value the gateway cannot run with; the message names it."""


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


class Settings(BaseSettings):
    """The gateway's configuration. Units are in the names (`_s`, `_mb`)."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    port: int = Field(3000, ge=1, le=65535, description="Port the gateway listens on")
    host: str = Field(
        "::",
        description="Address the gateway listens on: `::` (or empty) is every address, IPv4 and "
        "IPv6; any other address means exactly that one (`0.0.0.0` IPv4 only, `127.0.0.1`, `::1`)",
    )
    cmd: str | None = Field(
        None,
        description="Command that starts ComfyUI (run in COMFY_HOME); default: the bundled one",
    )
    comfy_home: Path = Field(BUNDLED_COMFY_DIR / "ComfyUI", description="ComfyUI's folder")
    comfyui_port_host: int = Field(8188, ge=1, le=65535, description="Port ComfyUI listens on")
    direct_address: str = Field("127.0.0.1", description="Address the gateway reaches ComfyUI at")
    input_dir: Path | None = Field(None, description="ComfyUI's input folder")
    output_dir: Path | None = Field(None, description="ComfyUI's output folder")
    model_dir: Path | None = Field(None, description="ComfyUI's models folder")
    workflow_dir: Path = Field(PROJECT_ROOT / "workflows", description="Workflow modules")
    warmup_prompt_file: Path | None = Field(
        None, description="ComfyUI API-format graph run once at start-up, before /health is 200"
    )
    startup_check_interval_s: float = Field(1.0, gt=0, description="Seconds between start checks")
    startup_check_max_tries: int | None = Field(
        None, ge=1, description="Start checks before giving up (default: no count, see below)"
    )
    startup_timeout_s: float = Field(
        900.0,
        gt=0,
        description="Longest ComfyUI may take to answer at start, while it runs and logs",
    )
    startup_silence_max_s: float = Field(
        300.0,
        gt=0,
        description="Give up starting when ComfyUI has printed nothing for this long",
    )
    event_silence_check_s: float = Field(
        15.0,
        gt=0,
        description="While jobs are pending and ComfyUI's event stream has been silent this "
        "long, ask ComfyUI over HTTP where they are (a stream can stall without closing)",
    )
    always_restart_comfyui: bool = Field(False, description="Restart ComfyUI when it exits")
    restart_max_backoff_s: float = Field(30.0, gt=0, description="Longest wait between restarts")
    max_queue_depth: int = Field(
        0, ge=0, description="Refuse work past this queue depth (0: no cap)"
    )
    max_body_size_mb: float = Field(100.0, gt=0, description="Largest request body accepted")
    prompt_timeout_s: float | None = Field(None, gt=0, description="Longest a job may take")
    keep_outputs: bool = Field(False, description="Keep output files after they are returned")
    shutdown_grace_s: float = Field(30.0, ge=0, description="Time in-flight jobs get on shutdown")
    log_level: LogLevel = Field("info", description="Log level")
    log_format: LogFormat = Field(
        "text", description="`text`, or `json`: one JSON object per line, with the request id"
    )
    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (), description="API keys (comma list); when set, requests need one (Bearer or X-API-Key)"
    )
    api_keys_file: Path | None = Field(
        None, description="File of API keys, one per line, `#` comments; re-read when it changes"
    )
    cors_allow_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Origins browsers may call from: comma list of scheme://host[:port], or *"
    )
    prompt_webhook_retries: int = Field(3, ge=1, le=20, description="Delivery attempts per webhook")
    webhook_timeout_s: float = Field(10.0, gt=0, description="Time one delivery attempt may take")
    webhook_backoff_s: float = Field(1.0, ge=0, description="Wait before the first retry (doubles)")
    webhook_secret: str | None = Field(None, description="Standard Webhooks secret (base64)")
    system_webhook_url: HttpUrl | None = Field(
        None,
        description="Receiver of ComfyUI's events; set by the operator, so its address is not "
        "checked against ALLOW_PRIVATE_URLS / ALLOWED_PRIVATE_NETWORKS",
    )
    system_webhook_events: Annotated[frozenset[str], NoDecode] = Field(
        frozenset(), description="Event types to forward: comma list, or `all`"
    )
    system_meta: dict[str, str] = Field(
        default_factory=lambda: {
            k.removeprefix("SYSTEM_META_"): v
            for k, v in os.environ.items()
            if k.startswith("SYSTEM_META_") and k != "SYSTEM_META_"
        },
        description="SYSTEM_META_<key> variables, sent as `metadata` with system events",
    )
    input_max_mb: float = Field(100.0, gt=0, description="Largest input file a URL may deliver")
    input_download_timeout_s: float = Field(
        30.0, gt=0, description="Time one input download may take"
    )
    allow_private_urls: bool = Field(
        False,
        description="Let the URLs a request names (input URLs, webhook URLs and upload URLs) "
        "reach private, loopback and link-local addresses",
    )
    allowed_private_networks: Annotated[tuple[IPvAnyNetwork, ...], NoDecode] = Field(
        (),
        description="Private networks that input URLs, webhook URLs and upload URLs may reach "
        "anyway: comma list of CIDRs",
    )
    http_upload_auth_header: str | None = Field(
        None, description="Header sent with http_upload PUTs, e.g. `Authorization: Bearer …`"
    )
    upload_timeout_s: float = Field(60.0, gt=0, description="Time one output upload may take")
    job_history_max: int = Field(100, ge=0, description="Finished jobs kept for GET /prompt/{id}")
    job_history_ttl_s: float = Field(3600, ge=0, description="How long a finished job is kept")
    job_history_max_mb: float = Field(
        256.0, ge=0, description="Memory the kept results (their base64 outputs) may take"
    )
    comfy_passthrough: PassthroughMode = Field(
        PassthroughMode.SAFE,
        description="Serve ComfyUI's own API and websocket under /comfy/: `true` (what a client "
        "needs to run its own prompts), `full` (every endpoint, admin ones included) or `false`",
    )
    sdapi_workflow_family: Literal["sd15", "sdxl"] = Field(
        "sd15", description="Which shipped workflows AUTOMATIC1111's /sdapi/v1 runs"
    )

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

    @field_validator("webhook_secret")
    @classmethod
    def _secret_decodes(cls, value: str | None) -> str | None:
        if value is not None:
            raw = value.removeprefix("whsec_")
            try:
                if not base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True):
                    raise ValueError
            except ValueError:
                raise ValueError("must be non-empty base64, optionally prefixed whsec_") from None
        return value

    @field_validator("system_webhook_events", mode="before")
    @classmethod
    def _known_events(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        names = set(value or ())
        if "all" in names:
            return frozenset(SYSTEM_EVENT_TYPES)
        unknown = names - SYSTEM_EVENT_TYPES
        if unknown:
            allowed = ", ".join(sorted(SYSTEM_EVENT_TYPES))
            raise ValueError(f"unknown event type(s) {sorted(unknown)}; allowed: all, {allowed}")
        return frozenset(names)

    @field_validator("allowed_private_networks", mode="before")
    @classmethod
    def _split_networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("comfy_passthrough", mode="before")
    @classmethod
    def _passthrough_mode(cls, value: Any) -> Any:
        # Before `full` existed this was a boolean: its spellings keep their meaning.
        if isinstance(value, bool):
            return PassthroughMode.SAFE if value else PassthroughMode.OFF
        if isinstance(value, str):
            value = value.strip().lower()
            if value in BOOL_TRUE:
                return PassthroughMode.SAFE
            if value in BOOL_FALSE:
                return PassthroughMode.OFF
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower_level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys_valid(cls, value: Any) -> Any:
        keys = split_keys(value) if isinstance(value, str) else [str(k) for k in value or ()]
        for number, key in enumerate(keys, start=1):
            if problem := key_problem(key):
                raise ValueError(f"key {number} of {len(keys)} {problem}")
        return tuple(keys)

    @field_validator("api_keys_file")
    @classmethod
    def _key_file_readable(cls, value: Path | None) -> Path | None:
        if value is not None:
            read_key_file(value)  # its ValueError names the line, never the key
        return value

    @field_validator("cors_allow_origins", mode="before")
    @classmethod
    def _origins_valid(cls, value: Any) -> Any:
        given = [o.strip() for o in value.split(",")] if isinstance(value, str) else value
        origins = []
        for origin in (str(o) for o in given or () if o):
            if origin != "*" and not ORIGIN.fullmatch(origin.lower()):
                raise ValueError(
                    f"{origin!r} is not an origin: scheme://host[:port], no path or trailing "
                    "slash (e.g. https://app.example.com), or *"
                )
            # As a browser sends it: lower case, without the scheme's default port.
            origin = origin.lower()
            origins.append(origin.removesuffix(DEFAULT_PORTS.get(origin.split(":")[0], "")))
        return ("*",) if "*" in origins else tuple(dict.fromkeys(origins))

    @field_validator(
        "prompt_timeout_s", "cmd", "input_dir", "output_dir", "model_dir", "webhook_secret",
        "api_keys_file", "startup_check_max_tries", mode="before",
    )  # fmt: skip
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("cmd")
    @classmethod
    def _cmd_parses(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                if not shlex.split(value):
                    raise ValueError("CMD is empty")
            except ValueError as e:
                raise ValueError(f"not a valid shell command: {e}") from e
        return value

    @model_validator(mode="after")
    def _ports_differ(self) -> Settings:
        if self.port == self.comfyui_port_host:
            raise ValueError("PORT and COMFYUI_PORT_HOST must differ")
        return self

    @field_validator("warmup_prompt_file", mode="before")
    @classmethod
    def _no_warmup(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("warmup_prompt_file")
    @classmethod
    def _warmup_readable(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                data = json.loads(value.read_text())
            except OSError as e:
                raise ValueError(f"cannot be read: {e.strerror or e}") from None
            except ValueError as e:
                raise ValueError(f"is not JSON: {e}") from None
            if not isinstance(data, dict) or not data:
                raise ValueError("must hold a ComfyUI API-format graph (a JSON object of nodes)")
        return value

    @property
    def comfy_url(self) -> str:
        host = self.direct_address
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.comfyui_port_host}"

    @property
    def comfy_input_dir(self) -> Path:
        return self.input_dir or self.comfy_home / "input"

    @property
    def comfy_output_dir(self) -> Path:
        return self.output_dir or self.comfy_home / "output"

    @property
    def max_body_size_bytes(self) -> int:
        return int(self.max_body_size_mb * 1024 * 1024)


def load_settings(**overrides: Any) -> Settings:
    """Build Settings, turning validation failures into one line per bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            name = str(err["loc"][0]).upper() if err["loc"] else "PORT/COMFYUI_PORT_HOST"
            given = err.get("input")
            secret = name in SECRET_SETTINGS
            shown = f"={given!r}" if not isinstance(given, dict) and not secret else ""
            message = err["msg"].removeprefix("Value error, ")
            if err["type"].startswith("bool"):
                message += " (true/false, 1/0, yes/no, on/off)"
            lines.append(f"invalid setting {name}{shown}: {message}")
        raise SettingsError("; ".join(lines)) from None


def die_on_bad_settings(error: SettingsError) -> None:
    print(f"comfy-gateway: {error}", file=sys.stderr)
    raise SystemExit(2)
