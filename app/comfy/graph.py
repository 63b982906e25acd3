"""Graphs in ComfyUI's API format: `{node_id: {"class_type", "inputs", "_meta"?}}`.

ComfyUI answers some malformed graphs with a bare HTTP 500 (a node that is not an object,
`inputs` that are not an object, `_meta` that is not an object), and runs a link with a negative
output index as "the last output". The gateway checks the shape first, so a client learns where
its graph is wrong instead of being told to retry.
"""

from __future__ import annotations

from typing import Any

from app.core.errors import InvalidRequest

Graph = dict[str, dict[str, Any]]


def is_link(value: Any) -> bool:
    """True for an input value ComfyUI reads as a link: any list (it wants `[node_id, index]`)."""
    return isinstance(value, list)


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
            if is_link(value):
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
