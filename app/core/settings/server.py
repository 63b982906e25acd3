"""The gateway's own server: where it listens, who may call it, what it logs."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from app.core.keys import entry_problem, read_key_file, split_entry, split_keys
from app.core.settings.sources import BOOL_FALSE, BOOL_TRUE, empty_is_unset

LogLevel = Literal["debug", "info", "warning", "error", "critical"]
# comfyui-api's (pino's) level names that ours spell otherwise.
THEIR_LEVELS = {"trace": "debug", "warn": "warning", "fatal": "critical"}
LogFormat = Literal["text", "json"]
# What a browser sends in Origin: scheme://host[:port], nothing after.
ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://(\[[0-9a-fA-F:.]+\]|[^/:\s\[\]]+)(:\d{1,5})?")
DEFAULT_PORTS = {"https": ":443", "http": ":80"}


class PassthroughMode(StrEnum):
    """COMFY_PASSTHROUGH: off (404), the endpoints a client's own prompts need, or all of them."""

    OFF = "false"
    SAFE = "true"
    FULL = "full"


class ServerSettings(BaseModel):
    """The gateway's server: address, API keys, browsers, request size, logs, facades."""

    port: int = Field(
        3000,
        ge=1,
        le=65535,
        description="Port the gateway listens on",
    )
    host: str = Field(
        "::",
        description="Address the gateway listens on: `::` (or empty) is every address, IPv4 and "
        "IPv6, as SaladCloud and IPv4 Kubernetes probes need (IPv4 only on a host "
        "without IPv6); any other address means exactly that one (`0.0.0.0`, "
        "`127.0.0.1`, `::1`)",
    )
    shutdown_grace_s: float = Field(
        30.0,
        ge=0,
        description="How long in-flight jobs get to finish on SIGTERM/SIGINT",
    )
    max_body_size_mb: float = Field(
        100.0,
        gt=0,
        description="Largest request body, declared or streamed (413 past it)",
    )
    log_level: LogLevel = Field(
        "info",
        description="debug, info, warning, error or critical (comfyui-api's `trace`, `warn` and "
        "`fatal` are debug, warning and critical)",
    )
    log_format: LogFormat = Field(
        "text",
        description="`text`, or `json`: one JSON object per line, with the request id",
    )
    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (),
        description="API keys, a comma list of `key` or `name:key` (keys at least 16 characters; "
        "names 1-64 of `A-Za-z0-9_.-`, shown in logs, metrics and webhooks); when set, every "
        "endpoint but the probes, `/metrics` and the docs needs one (`Authorization: Bearer "
        "<key>` or `X-API-Key`), and each key sees only its own jobs",
    )
    api_keys_file: Path | None = Field(
        None,
        description="A file of API keys, one `key` or `name:key` per line, `#` comments; added to "
        "`API_KEYS`, re-read within 5 s of a change",
    )
    cors_allow_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Origins browser apps may call from: a comma list of "
        "`scheme://host[:port]`, or `*`",
    )
    comfy_passthrough: PassthroughMode = Field(
        PassthroughMode.SAFE,
        description="Serve ComfyUI's own API under `/comfy/` and its websocket at `/comfy/ws` and "
        "`/ws`: `true`, the endpoints a client needs to run its own prompts (others are "
        "403); `full`, every endpoint, admin ones included (clear the queue, interrupt "
        "anything, free memory, user data); `false`, none (404)",
    )
    sdapi_workflow_family: Literal["sd15", "sdxl"] = Field(
        "sd15",
        description="Which shipped workflows `/sdapi/v1` runs: `sd15` (txt2img, img2img, inpaint) "
        "or `sdxl` (txt2img with LoRAs, img2img)",
    )
    console_enabled: bool = Field(
        True,
        description="The operator page at `/console` (docs/console.md): the instances, the "
        "queue, running and finished jobs, the model cache, the fleet's gateways. With API "
        "keys, its data needs an admin key (`ADMIN_API_KEYS`; another key gets 403); without "
        "keys, whoever reaches the port sees it, like the rest of the API. `false`: 404",
    )

    @property
    def max_body_size_bytes(self) -> int:
        return int(self.max_body_size_mb * 1024 * 1024)

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower_level(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return THEIR_LEVELS.get(value.lower(), value.lower())

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys_valid(cls, value: Any) -> Any:
        return checked_keys(value)

    @field_validator("api_keys_file", mode="before")
    @classmethod
    def _no_key_file(cls, value: Any) -> Any:
        return empty_is_unset(value)

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


def checked_keys(value: Any) -> tuple[str, ...]:
    """The entries of a key list (a comma string or a list), each `key` or `name:key`; a bad
    one raises ValueError naming its position, never the key."""
    keys = split_keys(value) if isinstance(value, str) else [str(k) for k in value or ()]
    for number, key in enumerate(keys, start=1):
        if problem := entry_problem(split_entry(key)):
            raise ValueError(f"key {number} of {len(keys)} {problem}")
    return tuple(keys)
