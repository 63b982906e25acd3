"""AUTOMATIC1111's words in ComfyUI's terms: samplers, schedulers, `<lora:…>` tags, sizes, seeds.

Pure functions, no HTTP: app.compat.a1111.routes turns an `/sdapi/v1` request into the input of
a shipped workflow module with these, then runs it as any workflow job. Whatever cannot be
honoured is reported in a `warnings` list (it ends up in the response's `info`), never raised.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import PurePosixPath
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

from app.core.numbers import finite_number
from app.registry.schema import FileOrUrl

# A1111 sampler -> ComfyUI sampler_name, in the order A1111 lists them.
SAMPLERS: dict[str, str] = {
    "DPM++ 2M": "dpmpp_2m",
    "DPM++ SDE": "dpmpp_sde",
    "DPM++ 2M SDE": "dpmpp_2m_sde",
    "DPM++ 2M SDE Heun": "dpmpp_2m_sde_heun",
    "DPM++ 2S a": "dpmpp_2s_ancestral",
    "DPM++ 3M SDE": "dpmpp_3m_sde",
    "Euler a": "euler_ancestral",
    "Euler": "euler",
    "LMS": "lms",
    "Heun": "heun",
    "DPM2": "dpm_2",
    "DPM2 a": "dpm_2_ancestral",
    "DPM fast": "dpm_fast",
    "DPM adaptive": "dpm_adaptive",
    "DDIM": "ddim",
    "DDPM": "ddpm",
    "UniPC": "uni_pc",
    "LCM": "lcm",
    "DEIS": "deis",
    "iPNDM": "ipndm",
    "iPNDM_V": "ipndm_v",
}
# A1111 scheduler (name or label) -> ComfyUI scheduler. "automatic" is the sampler's own choice,
# which for the k-diffusion samplers is the model's discretisation: ComfyUI's "normal".
SCHEDULERS: dict[str, str] = {
    "automatic": "normal",
    "uniform": "normal",
    "karras": "karras",
    "exponential": "exponential",
    "sgm_uniform": "sgm_uniform",
    "kl_optimal": "kl_optimal",
    "simple": "simple",
    "normal": "normal",
    "ddim": "ddim_uniform",
    "beta": "beta",
}
SCHEDULER_LABELS = {
    "automatic": "Automatic", "uniform": "Uniform", "karras": "Karras",
    "exponential": "Exponential", "sgm_uniform": "SGM Uniform", "kl_optimal": "KL Optimal",
    "simple": "Simple", "normal": "Normal", "ddim": "DDIM", "beta": "Beta",
}  # fmt: skip
# Before A1111 1.9 the scheduler was part of the sampler's name: "DPM++ 2M Karras".
SUFFIXES = {" Karras": "karras", " Exponential": "exponential", " SGM Uniform": "sgm_uniform"}
FALLBACK_SAMPLER = "euler"
MIN_SIZE, MAX_SIZE = 64, 2048
SEED_RANGE = 2**32
LORA_TAG = re.compile(r"<(?:lora|lyco):([^:>]+)((?::[^:>]*)*)>", re.IGNORECASE)
# Request fields that change the image and that no shipped workflow can do: a warning when on.
UNSUPPORTED = {
    "enable_hr": "hires fix (enable_hr)",
    "restore_faces": "face restoration (restore_faces)",
    "tiling": "tiling",
    "styles": "styles",
    "subseed_strength": "variation seeds (subseed_strength)",
    "script_name": "scripts (script_name)",
    "alwayson_scripts": "extensions (alwayson_scripts)",
    "controlnet_units": "ControlNet (controlnet_units)",
    "save_images": "saving on the server (save_images)",
}


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", name.lower())


def sampler_and_scheduler(
    sampler: str | None,
    scheduler: str | None,
    samplers: list[str] | None,
    schedulers: list[str] | None,
    warnings: list[str],
) -> tuple[str, str]:
    """ComfyUI's (sampler_name, scheduler) for A1111's; unknown ones fall back with a warning.

    `samplers`/`schedulers` are what this ComfyUI has (None: not known, anything goes).
    """
    name = (sampler or "Euler").strip()
    from_suffix = None
    for suffix, value in SUFFIXES.items():
        if name.endswith(suffix) and name.removesuffix(suffix) in SAMPLERS:
            name, from_suffix = name.removesuffix(suffix), value
    by_slug = {slug(k): v for k, v in SAMPLERS.items()}
    comfy = SAMPLERS.get(name) or by_slug.get(slug(name))
    if comfy is None and (samplers is None or name in samplers):
        comfy = name  # ComfyUI's own name, e.g. "dpmpp_2m"
    if comfy is None or (samplers is not None and comfy not in samplers):
        warnings.append(f"sampler {name!r} is not available; used {FALLBACK_SAMPLER!r}")
        comfy = FALLBACK_SAMPLER
    wanted = (scheduler or "automatic").strip()
    key = slug(wanted)
    label_slugs = {slug(label): k for k, label in SCHEDULER_LABELS.items()}
    schedule = SCHEDULERS.get(label_slugs.get(key, wanted.lower()))
    if schedule is None and (schedulers is None or wanted in schedulers):
        schedule = wanted
    if from_suffix and key in ("automatic", ""):
        schedule = from_suffix
    if schedule is None or (schedulers is not None and schedule not in schedulers):
        warnings.append(f"scheduler {wanted!r} is not available; used 'normal'")
        schedule = "normal"
    return comfy, schedule


@dataclass(frozen=True)
class LoraTag:
    """One `<lora:name:te:unet>` of a prompt; strengths as A1111 reads them."""

    name: str
    te: float = 1.0  # text encoder (ComfyUI's strength_clip)
    unet: float = 1.0  # the model (strength_model); defaults to te

    @classmethod
    def parse(cls, name: str, args: str) -> LoraTag:
        positional: list[float] = []
        named: dict[str, float] = {}
        for arg in filter(None, args.split(":")):
            key, _, value = arg.rpartition("=")
            number = finite_number(value)  # not `nan` or `inf`: ComfyUI cannot be sent those
            if number is None:
                raise ValueError(f"<lora:{name}{args}> has a weight that is not a number")
            if key:
                named[key.strip()] = number
            else:
                positional.append(number)
        te = named.get("te", positional[0] if positional else 1.0)
        unet = named.get("unet", positional[1] if len(positional) > 1 else te)
        return cls(name.strip(), te, unet)


def split_loras(prompt: str) -> tuple[str, list[LoraTag]]:
    """The prompt without its `<lora:…>` tags, and the tags (ValueError for a bad weight)."""
    tags = [LoraTag.parse(m.group(1), m.group(2)) for m in LORA_TAG.finditer(prompt)]
    text = re.sub(r"\s{2,}", " ", LORA_TAG.sub("", prompt)).strip(" ,")
    return text, tags


def find_file(name: str, files: list[str]) -> str | None:
    """The installed file A1111's name means: the file itself, its stem, or a title `x [hash]`."""
    wanted = re.sub(r"\s*\[[0-9a-fA-F]+\]$", "", name.strip())
    for file in files:
        path = PurePosixPath(file.replace("\\", "/"))
        if wanted in (file, path.name, path.stem, str(path.with_suffix(""))):
            return file
    lowered = wanted.lower()
    return next((f for f in files if PurePosixPath(f).stem.lower() == lowered), None)


def add_loras(graph: dict[str, Any], loras: list[tuple[str, LoraTag]]) -> dict[str, Any]:
    """Put a LoraLoader chain after the graph's checkpoint loader, for modules without LoRAs.

    Every consumer of the checkpoint's MODEL and CLIP outputs is rewired to the chain's end, so
    the module's own graph is otherwise unchanged.
    """
    loader = next(
        (i for i, n in graph.items() if n.get("class_type") == "CheckpointLoaderSimple"), None
    )
    if loader is None or not loras:
        return graph
    model, clip = [loader, 0], [loader, 1]
    added: dict[str, Any] = {}
    for index, (file, tag) in enumerate(loras):
        node = f"sdapi_lora_{index}"
        added[node] = {
            "class_type": "LoraLoader",
            "inputs": {
                "model": model,
                "clip": clip,
                "lora_name": file,
                "strength_model": tag.unet,
                "strength_clip": tag.te,
            },
        }
        model, clip = [node, 0], [node, 1]
    for node in graph.values():
        inputs = node.get("inputs", {})
        for key, value in inputs.items():
            if value == [loader, 0]:
                inputs[key] = model
            elif value == [loader, 1]:
                inputs[key] = clip
    return graph | added


def image_size(value: int, field: str, warnings: list[str]) -> int:
    """A size the workflows take: a multiple of 8 (as A1111's latent is), 64 to 2048."""
    size = min(max(value // 8 * 8, MIN_SIZE), MAX_SIZE)
    if size != value:
        warnings.append(
            f"{field} {value} is not a multiple of 8 in {MIN_SIZE}..{MAX_SIZE}: used {size}"
        )
    return size


def seed_of(seed: int | None) -> int:
    """A1111's -1 (or nothing) is a random seed; any other value is used as it is."""
    return random.randrange(SEED_RANGE) if seed is None or seed == -1 else seed


def unsupported(fields: dict[str, Any]) -> list[str]:
    """Warnings for the fields that ask for something the workflows cannot do."""
    return [
        f"{what} is not supported and was ignored"
        for key, what in UNSUPPORTED.items()
        if fields.get(key)
    ]


def allowed(model: type[BaseModel], field: str) -> list[str] | None:
    """The values a narrowed workflow field allows (ComfyUI's list), or None when any string."""
    info = model.model_fields.get(field)
    if info is None:
        return None
    # A model field takes a URL too (app.registry.schema.file_or_url); A1111 clients name files.
    marker = next((m for m in info.metadata if isinstance(m, FileOrUrl)), None)
    if marker is not None:
        return list(marker.files)
    annotation: Any = info.annotation
    for _ in range(3):  # Annotated[Literal[...], ...] as app.registry.schema.enum_of builds it
        if get_origin(annotation) is Literal:
            return [str(v) for v in get_args(annotation)]
        if isinstance(annotation, type) and issubclass(annotation, Enum):
            return [str(m.value) for m in annotation]
        args = get_args(annotation)
        if not args:
            return None
        annotation = args[0]
    return None
