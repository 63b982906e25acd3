"""Warmup: run WARMUP_PROMPT_FILE once at start-up, before /health turns 200.

The first job on a fresh ComfyUI loads its models; the warmup prompt pays that before traffic
arrives. It runs through the gateway's own job path, so a prompt that cannot run fails
start-up with the reason instead of failing the first real request. The checkpoint it loads is
the default checkpoint of the workflow endpoints.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING

from app.comfy.graph import checkpoint_of, load_graph
from app.comfy.process import ComfyStartError
from app.core.errors import GatewayError
from app.core.settings import Settings

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
        result = await gateway.jobs.run(f"warmup-{uuid.uuid4().hex[:8]}", graph, "warmup")
    except GatewayError as e:
        raise ComfyStartError(f"the warmup prompt WARMUP_PROMPT_FILE={path} failed: {e}") from e
    log.info(
        "warmup prompt %s ran in %.1fs (%d output file(s))",
        path,
        time.monotonic() - started,
        len(result.filenames),
    )
