"""System events as comfyui-api sends them: each event's name and the shape of its `data`.

A ComfyUI event's `data` is ComfyUI's whole websocket message, `{"type", "data": {…}}`, so their
receivers read `body.data.data.prompt_id`; ours read `body.data.prompt_id`, so the inner fields
stay at `data` too (both readable). The prompt id is the request's, in `progress_state`'s nodes
as well. The store's file events are named `storage.file_downloaded|file_uploaded|file_deleted`,
their `data` the object itself (`url`, `local_path`, `size`, `duration`).
"""

from __future__ import annotations

from typing import Any

FILE_EVENTS = frozenset({"file_downloaded", "file_uploaded", "file_deleted"})


def event_name(event: str) -> str:
    """The envelope's `event` for one of the gateway's own events."""
    return f"storage.{event}" if event in FILE_EVENTS else event


def comfy_event_data(kind: str, data: dict[str, Any], request_id: str | None) -> dict[str, Any]:
    """`data` of `comfy.<kind>`: ComfyUI's message (theirs) over its inner fields (ours)."""
    inner = dict(data)
    if request_id is not None:
        inner["prompt_id"] = request_id
        nodes = inner.get("nodes")
        if kind == "progress_state" and isinstance(nodes, dict):
            inner["nodes"] = {
                node_id: {**node, "prompt_id": request_id} if isinstance(node, dict) else node
                for node_id, node in nodes.items()
            }
    return {**inner, "type": kind, "data": inner}
