"""Catalog: what one running ComfyUI offers (its `/object_info` and model listing), read once.

`/object_info` describes each node class: its inputs (`required`, `optional`, `hidden`), each
as `[TYPE, {options}]` where TYPE is a type name (`"MODEL"`, `"INT"`), a list of allowed values
(a combo), or `"COMBO"` with the values under `options`; and its outputs (`output`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.comfy.client import ComfyClient

ObjectInfo = dict[str, dict[str, Any]]

# Input flags that mark a value the gateway supplies per request (an uploaded file).
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "upload")


@dataclass(frozen=True)
class InputSpec:
    """One input of a node class, as `/object_info` describes it."""

    name: str
    type: str  # a type name such as "MODEL", "INT"; "COMBO" for a list of allowed values
    options: dict[str, Any]
    choices: list[Any] | None  # the allowed values of a combo
    required: bool

    @property
    def uploads(self) -> bool:
        """True for a file input the gateway fills per request (LoadImage.image and the like)."""
        return any(self.options.get(flag) for flag in UPLOAD_FLAGS)


def input_spec(name: str, raw: Any, *, required: bool) -> InputSpec:
    """Parse one `[TYPE, {options}]` entry of `/object_info`, in either combo format."""
    kind = raw[0] if isinstance(raw, list | tuple) and raw else raw
    options = raw[1] if isinstance(raw, list | tuple) and len(raw) > 1 else {}
    options = options if isinstance(options, dict) else {}
    if isinstance(kind, list | tuple):
        return InputSpec(name, "COMBO", options, list(kind), required)
    if kind == "COMBO":
        return InputSpec(name, "COMBO", options, list(options.get("options", [])), required)
    return InputSpec(name, str(kind), options, None, required)


def node_inputs(info: dict[str, Any]) -> dict[str, InputSpec]:
    """Every required and optional input of a node class, in the class's own order."""
    inputs = info.get("input", {})
    specs: dict[str, InputSpec] = {}
    for group, required in (("required", True), ("optional", False)):
        for name, raw in (inputs.get(group) or {}).items():
            specs[name] = input_spec(name, raw, required=required)
    return specs


@dataclass
class Catalog:
    """The node classes and model files of one ComfyUI."""

    object_info: ObjectInfo
    models: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    async def fetch(cls, client: ComfyClient) -> Catalog:
        """Read `/object_info` and every model folder from a running ComfyUI."""
        return cls(await client.object_info(), await client.models())

    @classmethod
    def from_file(cls, path: Path) -> Catalog:
        """A catalog saved as JSON: `/object_info` itself, or `{"object_info", "models"}`."""
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path} does not hold a JSON object")
        if isinstance(data.get("object_info"), dict):
            return cls(data["object_info"], dict(data.get("models") or {}))
        return cls(data)

    def folder_files(self, folder: str) -> list[str] | None:
        """The files of a model folder (`checkpoints`), or None when ComfyUI has no such folder."""
        return list(self.models[folder]) if folder in self.models else None

    def input_choices(self, node: str, name: str) -> list[str] | None:
        """The values a combo input allows (KSampler's sampler_name), or None when not a combo."""
        info = self.object_info.get(node)
        spec = node_inputs(info).get(name) if info else None
        if spec is None or spec.choices is None:
            return None
        return [str(value) for value in spec.choices]
