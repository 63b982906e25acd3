"""Graphs in ComfyUI's API format: `{node_id: {"class_type", "inputs", "_meta"?}}`.

Everything the gateway reads from or rewrites in a graph: its shape check, links, node order,
the unique save prefixes of a job, the checkpoint it loads, and loading one from a file.

ComfyUI answers some malformed graphs with a bare HTTP 500 (a node that is not an object,
`inputs` that are not an object, `_meta` that is not an object), and runs a link with a negative
output index as "the last output". The gateway checks the shape first, so a client learns where
its graph is wrong instead of being told to retry. It also refuses, located, what it could not
carry through: a value JSON cannot hold (NaN, a lone surrogate: a workflow module or a facade may
compute one), a node id that is empty, long or holds control characters, and a save prefix
ComfyUI would fail to save under (absolute, `..`, NUL, too long): that would fail the job as a
502 after it took its turn.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from app.core.errors import InvalidRequest

Graph = dict[str, dict[str, Any]]
NODE_ID_MAX = 128
PREFIX_MAX_BYTES = 200  # NAME_MAX (255) less what the job's tag and ComfyUI's counter add
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
SURROGATE = re.compile("[\ud800-\udfff]")
ASCII_DIGITS = frozenset("0123456789")


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
    """Raise InvalidRequest, located at the first bad part, unless graph has ComfyUI's shape
    and holds only what can be sent to ComfyUI and saved by it."""
    if not isinstance(graph, dict) or not graph:
        raise InvalidRequest(f"{where} must be a non-empty object of nodes", location=where)
    for node_id, node in graph.items():
        _check_node_id(str(node_id), where)
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
            else:
                _check_value(name, value, f"{at}.inputs.{name}")


def _check_node_id(node_id: str, where: str) -> None:
    # ComfyUI takes any string; an empty one reads as "no node" to many clients, and control
    # characters (a newline) would forge lines in logs that quote an id.
    if not 0 < len(node_id) <= NODE_ID_MAX or CONTROL.search(node_id):
        raise InvalidRequest(
            f"{where}: a node id is 1 to {NODE_ID_MAX} characters with no control characters, "
            f"not {node_id!r:.60}",
            location=where,
        )


def _check_value(name: str, value: Any, at: str) -> None:
    """A literal input: one that can be sent as JSON and, for a save prefix, saved."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRequest(f"{at}: {value} is not a number JSON can carry", location=at)
    if isinstance(value, str) and not value.isascii() and SURROGATE.search(value):
        raise InvalidRequest(f"{at}: holds a lone surrogate, which is not Unicode", location=at)
    if name == "filename_prefix" and isinstance(value, str) and not _saveable(value):
        raise InvalidRequest(
            f"{at}: a file name prefix under ComfyUI's output folder: not absolute, no `..`, no "
            f"control characters, at most {PREFIX_MAX_BYTES} bytes; not {value!r:.60}",
            location=at,
        )


def _saveable(prefix: str) -> bool:
    # ComfyUI fails such a save as the node runs (a 502, after the job took its turn).
    return (
        len(prefix.encode()) <= PREFIX_MAX_BYTES
        and not prefix.startswith("/")
        and ".." not in prefix.split("/")
        and not CONTROL.search(prefix)
    )


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


def node_order(node_id: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key: numeric parts as numbers, so node 10 comes after node 9 (and 5:3 after 5).
    Compared by length, then digits, with no int(): `²` is no digit here, and any length is."""
    return tuple(
        (0, len(p.lstrip("0")), p.lstrip("0")) if p[0] in ASCII_DIGITS else (1, 0, p)
        for p in re.split(r"([0-9]+)", node_id)
        if p
    )


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


def node_names(graph: Graph) -> dict[str, str]:
    """What a person calls each node: its title (`_meta.title`), else its class_type."""
    names = {}
    for node_id, node in graph.items():
        meta = node.get("_meta")
        title = meta.get("title") if isinstance(meta, dict) else None
        name = title if isinstance(title, str) and title.strip() else node.get("class_type")
        names[node_id] = str(name)[:200]
    return names
