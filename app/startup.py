"""Start-up steps, run once ComfyUI answers and before /health turns 200.

Warmup runs WARMUP_PROMPT_FILE. The first job on a fresh ComfyUI loads its models; the warmup
prompt pays that before traffic arrives. It runs through the gateway's own job path, so a prompt
that cannot run fails start-up with the reason instead of failing the first real request. The
checkpoint it loads is the default checkpoint of the workflow endpoints.

Activation reads ComfyUI's nodes and models, readies every workflow module against them, and
mounts the workflow routes (their schemas carry this ComfyUI's enums).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from fastapi import FastAPI

from app.comfy.graph import checkpoint_of, load_graph
from app.comfy.process import ComfyStartError
from app.core.errors import GatewayError
from app.core.settings import Settings
from app.registry.load import Registry
from app.routes.workflows import mount

if TYPE_CHECKING:
    from app.gateway import Gateway

log = logging.getLogger(__name__)


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
        result = await gateway.warm_up(graph)
    except GatewayError as e:
        raise ComfyStartError(f"the warmup prompt WARMUP_PROMPT_FILE={path} failed: {e}") from e
    log.info(
        "warmup prompt %s ran in %.1fs (%d output file(s))",
        path,
        time.monotonic() - started,
        len(result.filenames),
    )


async def activate(app: FastAPI) -> None:
    """Start-up step: read ComfyUI's nodes and models, ready every workflow, mount the routes."""
    gateway: Gateway = app.state.gateway
    registry: Registry = app.state.registry
    try:
        catalog = await gateway.comfy.catalog()
    except GatewayError as e:
        raise ComfyStartError(f"cannot read ComfyUI's nodes and models: {e.message}") from e
    registry.activate(catalog, warmup_checkpoint(gateway.settings))
    mount(app, registry)
