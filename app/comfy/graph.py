"""Graphs in ComfyUI's API format: `{node_id: {"class_type", "inputs", "_meta"?}}`.

Everything the gateway reads from or rewrites in a graph: its shape check, links, node order,
the unique save prefixes of a job, the checkpoint it loads, and loading one from a file.

ComfyUI answers some malformed graphs with a bare HTTP 500 (a node that is not an object,
`inputs` that are not an object, `_meta` that is not an object), and runs a link with a negative
output index as "the last output". The gateway checks the shape first, so a client learns where
its graph is wrong instead of being told to retry.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from app.core.errors import InvalidRequest

Graph = dict[str, dict[str, Any]]


def is_link(value: Any) -> bool:
    """A well-formed link, `[node_id, output_index]`. (ComfyUI reads any list as a link, so
    check_graph refuses a list that is not one.)"""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


def check_graph(graph: Any, where: str = "prompt") -> None:
    """Raise InvalidRequest, located at the first bad part, unless graph has ComfyUI's shape."""
    if not isinstance(graph, dict) or not graph:
        raise InvalidRequest(f"{where} must be a non-empty object of nodes", location=where)
    for node_id, node in graph.items():
        at = f"{where}.{node_id}"
        if not isinstance(node, dict):
            raise InvalidRequest(f"{at}: a node must be an object", location=at)
        class_type = node.get("class_type")
        if not isinstance(class_type, str) or not class_type:
            raise InvalidRequest(
                f"{at}.class_type: must be a node type name such as KSampler",
                location=f"{at}.class_type",
            )
        if "_meta" in node and not isinstance(node["_meta"], dict):
            raise InvalidRequest(f"{at}._meta: must be an object", location=f"{at}._meta")
        inputs = node.get("inputs", {})
        if not isinstance(inputs, dict):
            raise InvalidRequest(f"{at}.inputs: must be an object", location=f"{at}.inputs")
        for name, value in inputs.items():
            if isinstance(value, list):  # ComfyUI reads every list as a link
                _check_link(graph, value, f"{at}.inputs.{name}")


def _check_link(graph: dict[str, Any], link: list[Any], at: str) -> None:
    if (
        len(link) != 2
        or not isinstance(link[0], str)
        or not isinstance(link[1], int)
        or isinstance(link[1], bool)
        or link[1] < 0
    ):
        raise InvalidRequest(
            f"{at}: a link must be [node_id, output_index] with a string node id and an output "
            f"index of 0 or more, not {link!r:.80}",
            location=at,
        )
    if link[0] not in graph:
        raise InvalidRequest(
            f"{at}: links to node {link[0]!r}, which the graph does not have", location=at
        )


def load_graph(path: Path) -> dict[str, dict[str, Any]]:
    """The graph in a warmup file: ComfyUI's API format, or `{"prompt": graph}`."""
    data = json.loads(path.read_text())
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict):
        data = data["prompt"]
    if not isinstance(data, dict) or not data:
        raise ValueError("it holds no graph (a JSON object of nodes in ComfyUI's API format)")
    for node_id, node in data.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise ValueError(f"its node {node_id!r} has no class_type (API format is needed)")
    return data


def checkpoint_of(graph: dict[str, dict[str, Any]]) -> str | None:
    """The checkpoint the graph's first CheckpointLoaderSimple loads, if any."""
    for node in graph.values():
        name = (node.get("inputs") or {}).get("ckpt_name")
        if node.get("class_type") == "CheckpointLoaderSimple" and isinstance(name, str):
            return name
    return None


def node_order(node_id: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key: numeric parts as numbers, so node 10 comes after node 9 (and 5:3 after 5)."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", node_id) if p)


def unique_prefixes(graph: dict[str, dict[str, Any]], tag: str) -> dict[str, dict[str, Any]]:
    """Append the job's tag to every literal filename_prefix.

    Concurrent jobs then never share output names, and a resubmitted graph's save nodes run
    again instead of reporting the (already removed) files of an earlier job from cache.
    """
    rewritten = {}
    for node_id, node in graph.items():
        prefix = node.get("inputs", {}).get("filename_prefix")
        if isinstance(prefix, str):
            node = {**node, "inputs": {**node["inputs"], "filename_prefix": f"{prefix}_{tag}"}}
        rewritten[node_id] = node
    return rewritten


# Inputs whose value names the model a node loads: the same one loaded twice costs nothing.
MODEL_INPUTS = ("ckpt_name", "unet_name")


def models_of(graph: Graph) -> frozenset[str]:
    """The checkpoints and diffusion models a graph loads (for model affinity)."""
    return frozenset(
        value
        for node in graph.values()
        for name, value in (node.get("inputs") or {}).items()
        if name in MODEL_INPUTS and isinstance(value, str)
    )
