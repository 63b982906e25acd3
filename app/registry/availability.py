"""Check a graph against a ComfyUI's `/object_info` before sending it: what would ComfyUI refuse?

The checks are those of ComfyUI's own validation that depend on the install, not on the input:
every `class_type` exists, required inputs are present, links point at an existing output of a
compatible type, combo values (model files among them) are allowed, numbers are within range.
Each problem is one sentence for people: `VHS_VideoCombine is not installed`,
`checkpoint flux1-schnell.safetensors not found`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.comfy.catalog import InputSpec, ObjectInfo, node_inputs
from app.comfy.graph import is_link
from app.comfy.model_inputs import is_model_url, model_folder

# What a model-file input holds, for messages; others are named by class and input.
FILE_KINDS = {
    "ckpt_name": "checkpoint",
    "lora_name": "LoRA",
    "unet_name": "diffusion model",
    "vae_name": "VAE",
    "clip_name": "text encoder",
    "clip_name1": "text encoder",
    "clip_name2": "text encoder",
    "clip_name3": "text encoder",
    "control_net_name": "ControlNet",
    "model_name": "model",
}


def types_match(received: Any, expected: str) -> bool:
    """ComfyUI's rule for linking an output type to an input type (`*` and `A,B` unions)."""
    received = "COMBO" if isinstance(received, list) else str(received)
    if received == expected:
        return True
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in expected.split(",")}
    return "*" in got or "*" in want or bool(got & want)


def check_graph(graph: Mapping[str, Any], object_info: ObjectInfo) -> list[str]:
    """Every reason ComfyUI would refuse this graph for on this install; [] when none."""
    reasons: list[str] = []
    missing_classes = []
    has_output_node = False
    for node_id, node in graph.items():
        class_type = node.get("class_type") if isinstance(node, dict) else None
        if not isinstance(class_type, str):
            reasons.append(f"node {node_id} has no class_type")
            continue
        info = object_info.get(class_type)
        if info is None:
            missing_classes.append(class_type)
            continue
        has_output_node = has_output_node or bool(info.get("output_node"))
        where = f"node {node_id} ({class_type})"
        inputs = node.get("inputs") or {}
        for name, spec in node_inputs(info).items():
            if name not in inputs:
                if spec.required:
                    reasons.append(f"{where}: required input {name} is missing")
                continue
            value = inputs[name]
            if is_model_url(value) and model_folder(class_type, name):
                continue  # downloaded into its folder before the job is submitted
            if is_link(value):
                reasons += _check_link(where, name, value, spec, graph, object_info)
            else:
                reasons += _check_value(where, name, value, spec)
    reasons = [f"{c} is not installed" for c in missing_classes] + reasons
    if not missing_classes and graph and not has_output_node:
        reasons.append("the graph has no output node (such as SaveImage)")
    return list(dict.fromkeys(reasons))


def _check_link(
    where: str,
    name: str,
    link: list[Any],
    spec: InputSpec,
    graph: Mapping[str, Any],
    object_info: ObjectInfo,
) -> list[str]:
    source_id, index = link
    source = graph.get(source_id)
    if not isinstance(source, dict):
        return [f"{where}: input {name} links to node {source_id}, which is not in the graph"]
    source_info = object_info.get(str(source.get("class_type")))
    if source_info is None:
        return []  # reported as not installed
    outputs = source_info.get("output") or []
    if not 0 <= index < len(outputs):
        return [
            f"{where}: input {name} links to output {index} of node {source_id}, "
            f"which has {len(outputs)} output(s)"
        ]
    if not types_match(outputs[index], spec.type):
        return [
            f"{where}: input {name} wants {spec.type} but node {source_id} "
            f"output {index} is {outputs[index]}"
        ]
    return []


def _check_value(where: str, name: str, value: Any, spec: InputSpec) -> list[str]:
    if spec.choices is not None:
        if spec.uploads or value in spec.choices:
            return []  # an uploaded file is supplied per request
        if name in FILE_KINDS:
            return [f"{FILE_KINDS[name]} {value} not found"]
        shown = ", ".join(map(str, spec.choices[:8])) + (", ..." if len(spec.choices) > 8 else "")
        return [f"{where}: {name} {value!r} is not one of the allowed values ({shown})"]
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if spec.type in ("INT", "FLOAT") and number:
        low, high = spec.options.get("min"), spec.options.get("max")
        if low is not None and value < low:
            return [f"{where}: {name} {value} is below its minimum {low}"]
        if high is not None and value > high:
            return [f"{where}: {name} {value} is above its maximum {high}"]
    return []
