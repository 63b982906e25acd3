"""Warmup: run WARMUP_PROMPT_FILE once at start-up, before /health turns 200.

The first job on a fresh ComfyUI loads its models; the warmup prompt pays that before traffic
arrives. It runs through the gateway's own job path, so a prompt that cannot run fails
start-up with the reason instead of failing the first real request. The checkpoint it loads is
the default checkpoint of the workflow endpoints.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.comfy.process import ComfyStartError
from app.core.errors import GatewayError
from app.core.settings import Settings

if TYPE_CHECKING:
    from app.gateway import Gateway

log = logging.getLogger(__name__)


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


def warmup_checkpoint(settings: Settings) -> str | None:
    path = settings.warmup_prompt_file
    return checkpoint_of(load_graph(path)) if path else None


async def run_warmup(gateway: Gateway) -> None:
    """Start-up step: run the warmup prompt, if one is set; raise ComfyStartError if it fails."""
    path = gateway.settings.warmup_prompt_file
    if path is None:
        return
    graph = load_graph(path)
    started = time.monotonic()
    try:
        result = await gateway.jobs.run(f"warmup-{uuid.uuid4().hex[:8]}", graph, "warmup")
    except GatewayError as e:
        raise ComfyStartError(f"the warmup prompt WARMUP_PROMPT_FILE={path} failed: {e}") from e
    log.info(
        "warmup prompt %s ran in %.1fs (%d output file(s))",
        path,
        time.monotonic() - started,
        len(result.filenames),
    )
