"""check_graph against the node definitions of a real ComfyUI 0.3.75 (saved /object_info)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.comfy.catalog import Catalog
from app.registry.availability import check_graph, types_match

ROOT = Path(__file__).resolve().parents[2]
CATALOG = Catalog.from_file(ROOT / "tests" / "fixtures" / "object_info.json")
T2I: dict[str, Any] = json.loads((ROOT / "tests" / "graphs" / "t2i.json").read_text())

Edit = Callable[[dict[str, Any]], None]


def put(node: str, name: str, value: Any) -> Edit:
    return lambda g: g[node]["inputs"].__setitem__(name, value)


def drop(node: str, name: str) -> Edit:
    return lambda g: g[node]["inputs"].pop(name)


def retype(node: str, class_type: str) -> Edit:
    return lambda g: g[node].__setitem__("class_type", class_type)


@pytest.mark.parametrize(
    ("edit", "reasons"),
    [
        (lambda g: None, []),
        (retype("7", "VHS_VideoCombine"), ["VHS_VideoCombine is not installed"]),
        (
            put("1", "ckpt_name", "flux1-schnell.safetensors"),
            ["checkpoint flux1-schnell.safetensors not found"],
        ),
        (drop("5", "steps"), ["node 5 (KSampler): required input steps is missing"]),
        (
            put("5", "sampler_name", "warp_drive"),
            [
                "node 5 (KSampler): sampler_name 'warp_drive' is not one of the allowed values "
                "(euler, euler_cfg_pp, euler_ancestral, euler_ancestral_cfg_pp, heun, heunpp2, "
                "dpm_2, dpm_2_ancestral, ...)"
            ],
        ),
        (put("5", "steps", 0), ["node 5 (KSampler): steps 0 is below its minimum 1"]),
        (put("5", "cfg", 101.0), ["node 5 (KSampler): cfg 101.0 is above its maximum 100.0"]),
        (
            put("6", "samples", ["9", 0]),
            ["node 6 (VAEDecode): input samples links to node 9, which is not in the graph"],
        ),
        (
            put("6", "vae", ["1", 3]),
            ["node 6 (VAEDecode): input vae links to output 3 of node 1, which has 3 output(s)"],
        ),
        (
            put("6", "vae", ["1", 1]),
            ["node 6 (VAEDecode): input vae wants VAE but node 1 output 1 is CLIP"],
        ),
        (lambda g: g.pop("7"), ["the graph has no output node (such as SaveImage)"]),
        (
            # the links of a missing node cannot be checked: only its absence is reported
            lambda g: (retype("1", "NoSuchLoader")(g), retype("7", "NoSuchSaver")(g)),
            ["NoSuchLoader is not installed", "NoSuchSaver is not installed"],
        ),
    ],
)
def test_check_graph(edit: Edit, reasons: list[str]) -> None:
    graph = copy.deepcopy(T2I)
    edit(graph)
    assert check_graph(graph, CATALOG.object_info) == reasons


def test_uploaded_files_are_not_checked_against_the_input_folder() -> None:
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "data:image/png;base64,iVBOR"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    assert check_graph(graph, CATALOG.object_info) == []


@pytest.mark.parametrize(
    ("received", "expected", "match"),
    [
        ("IMAGE", "IMAGE", True),
        ("IMAGE", "MASK", False),
        ("*", "MASK", True),
        ("IMAGE", "*", True),
        ("IMAGE,MASK", "MASK", True),
        (["a", "b"], "COMBO", True),
        ("LATENT", "COMBO", False),
    ],
)
def test_types_match_comfyui_rules(received: Any, expected: str, match: bool) -> None:
    assert types_match(received, expected) is match


@pytest.mark.parametrize("graph", sorted((ROOT / "tests" / "graphs").glob("*.json")), ids=str)
def test_graphs_comfyui_accepts_pass_and_the_ones_it_refuses_do_not(graph: Path) -> None:
    # g4-g7 are the graphs ComfyUI 0.3.75 refuses (see tests/integration/test_prompt.py)
    refused = graph.name.split("_")[0] in {"g4", "g5", "g6", "g7"}
    reasons = check_graph(json.loads(graph.read_text()), CATALOG.object_info)
    assert bool(reasons) is refused, reasons
