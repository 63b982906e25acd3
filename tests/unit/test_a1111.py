"""A1111's names in ComfyUI's terms: samplers, schedulers, LoRA tags, sizes, seeds, files."""

from __future__ import annotations

from typing import Any

import pytest

from app.compat.a1111 import terms as a1111
from app.registry.schema import enum_of

COMFY_SAMPLERS = ["euler", "euler_ancestral", "dpmpp_2m", "dpmpp_sde", "ddim", "uni_pc"]
COMFY_SCHEDULERS = ["normal", "karras", "exponential", "simple", "ddim_uniform", "beta"]


@pytest.mark.parametrize(
    ("sampler", "scheduler", "expected"),
    [
        ("DPM++ 2M Karras", None, ("dpmpp_2m", "karras")),
        ("DPM++ 2M", "Karras", ("dpmpp_2m", "karras")),
        ("DPM++ 2M", "automatic", ("dpmpp_2m", "normal")),
        ("Euler a", None, ("euler_ancestral", "normal")),
        ("euler a", "exponential", ("euler_ancestral", "exponential")),
        ("DDIM", "ddim", ("ddim", "ddim_uniform")),
        ("UniPC", "Simple", ("uni_pc", "simple")),
        ("dpmpp_sde", "beta", ("dpmpp_sde", "beta")),  # ComfyUI's own names pass
        (None, None, ("euler", "normal")),
    ],
)
def test_sampler_mapping(
    sampler: str | None, scheduler: str | None, expected: tuple[str, str]
) -> None:
    warnings: list[str] = []
    got = a1111.sampler_and_scheduler(
        sampler, scheduler, COMFY_SAMPLERS, COMFY_SCHEDULERS, warnings
    )
    assert got == expected
    assert warnings == []


@pytest.mark.parametrize(
    ("sampler", "scheduler", "warned"),
    [("PLMS", None, "sampler 'PLMS'"), ("Euler", "Align Your Steps", "scheduler")],
)
def test_unknown_sampler_falls_back_with_a_warning(
    sampler: str, scheduler: str | None, warned: str
) -> None:
    warnings: list[str] = []
    comfy, schedule = a1111.sampler_and_scheduler(
        sampler, scheduler, COMFY_SAMPLERS, COMFY_SCHEDULERS, warnings
    )
    assert comfy in COMFY_SAMPLERS and schedule in COMFY_SCHEDULERS
    assert len(warnings) == 1 and warned in warnings[0]


@pytest.mark.parametrize(
    ("prompt", "text", "tags"),
    [
        ("a cat <lora:detail:0.6>", "a cat", [a1111.LoraTag("detail", 0.6, 0.6)]),
        ("<lora:a> x, <LORA:b:0.5:0.8>", "x", [a1111.LoraTag("a"), a1111.LoraTag("b", 0.5, 0.8)]),
        ("<lyco:c:te=0.3:unet=0.9> y", "y", [a1111.LoraTag("c", 0.3, 0.9)]),
        ("no tags", "no tags", []),
    ],
)
def test_lora_tags(prompt: str, text: str, tags: list[a1111.LoraTag]) -> None:
    assert a1111.split_loras(prompt) == (text, tags)


def test_lora_tag_with_a_bad_weight() -> None:
    with pytest.raises(ValueError, match="not a number"):
        a1111.split_loras("<lora:x:heavy>")


def test_add_loras_rewires_the_checkpoint_outputs() -> None:
    graph: dict[str, Any] = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "x", "clip": ["1", 1]}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["2", 0]}},
        "6": {"class_type": "VAEDecode", "inputs": {"vae": ["1", 2]}},
    }
    tags = [("a.safetensors", a1111.LoraTag("a", 0.5, 0.7)), ("b.pt", a1111.LoraTag("b"))]
    out = a1111.add_loras(graph, tags)
    assert out["sdapi_lora_0"]["inputs"] | {} == {
        "model": ["1", 0],
        "clip": ["1", 1],
        "lora_name": "a.safetensors",
        "strength_model": 0.7,
        "strength_clip": 0.5,
    }
    assert out["sdapi_lora_1"]["inputs"]["model"] == ["sdapi_lora_0", 0]
    assert out["5"]["inputs"]["model"] == ["sdapi_lora_1", 0]
    assert out["2"]["inputs"]["clip"] == ["sdapi_lora_1", 1]
    assert out["6"]["inputs"]["vae"] == ["1", 2]  # the VAE does not go through LoRAs


@pytest.mark.parametrize(
    ("value", "size", "warned"),
    [(512, 512, False), (513, 512, True), (20, 64, True), (5000, 2048, True)],
)
def test_image_size(value: int, size: int, warned: bool) -> None:
    warnings: list[str] = []
    assert a1111.image_size(value, "width", warnings) == size
    assert bool(warnings) == warned


def test_seed() -> None:
    assert a1111.seed_of(7) == 7
    assert 0 <= a1111.seed_of(-1) < 2**32
    assert len({a1111.seed_of(-1) for _ in range(5)}) > 1


@pytest.mark.parametrize(
    ("name", "found"),
    [
        ("v1-5.safetensors", "v1-5.safetensors"),
        ("v1-5.safetensors [6ce0161689]", "v1-5.safetensors"),
        ("v1-5", "v1-5.safetensors"),
        ("XL/juggernaut", "XL/juggernaut.safetensors"),
        ("juggernaut", "XL/juggernaut.safetensors"),
        ("missing", None),
    ],
)
def test_find_file(name: str, found: str | None) -> None:
    assert a1111.find_file(name, ["v1-5.safetensors", "XL/juggernaut.safetensors"]) == found


def test_unsupported_fields_warn_only_when_on() -> None:
    assert a1111.unsupported({"enable_hr": False, "styles": [], "tiling": None}) == []
    warned = a1111.unsupported({"enable_hr": True, "styles": ["x"]})
    assert len(warned) == 2 and "enable_hr" in warned[0]


def test_allowed_reads_a_narrowed_field() -> None:
    from pydantic import create_model

    model = create_model("M", sampler_name=(enum_of(["euler", "ddim"]), "euler"), free=(str, ""))
    assert a1111.allowed(model, "sampler_name") == ["euler", "ddim"]
    assert a1111.allowed(model, "free") is None
    assert a1111.allowed(model, "absent") is None
