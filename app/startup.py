"""Start-up steps, run once ComfyUI answers and before /health turns 200.

The manifest (MODELS_MANIFEST) comes first: the models the warmup and the workflows need.

Warmup runs WARMUP_PROMPT_FILE (or comfyui-api's WARMUP_PROMPT_URL, fetched into a file before
anything starts). The first job on a fresh ComfyUI loads its models; the warmup
prompt pays that before traffic arrives. It runs through the gateway's own job path, so a prompt
that cannot run fails start-up with the reason instead of failing the first real request. The
checkpoint it loads is the default checkpoint of the workflow endpoints.

Activation reads ComfyUI's nodes and models, readies every workflow module against them, and
mounts the workflow routes (their schemas carry this ComfyUI's enums). Then the model store
watches ComfyUI's model files: whenever they change (a download, an eviction, a file put there
by hand), the workflows are readied again and their routes mounted anew, so their enums, their
availability and /docs follow without a restart.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin

import httpx
from fastapi import FastAPI

from app.comfy.graph import checkpoint_of, load_graph
from app.comfy.process import ComfyStartError
from app.core.downloads import redact
from app.core.errors import GatewayError
from app.core.settings import Settings, SettingsError, load_settings
from app.models.credentials import Credentials
from app.models.fetch import MAX_REDIRECTS
from app.models.manifest import fetch_manifest
from app.registry.load import Registry
from app.routes.workflows import mount

if TYPE_CHECKING:
    from app.gateway import Gateway

log = logging.getLogger(__name__)


def warmup_checkpoint(settings: Settings) -> str | None:
    path = settings.warmup_prompt_file
    return checkpoint_of(load_graph(path)) if path else None


def fetch_warmup_prompt(settings: Settings) -> Settings:
    """comfyui-api's WARMUP_PROMPT_URL: the graph fetched once, before anything starts, into a
    file that becomes WARMUP_PROMPT_FILE; SettingsError saying why not. The URL is the
    operator's (no address policy); their credentials go only where their prefixes cover it, on
    every hop."""
    url = settings.warmup_prompt_url
    if url is None or settings.warmup_prompt_file is not None:
        return settings
    credentials = Credentials.from_settings(settings)
    try:
        with httpx.Client(timeout=60, follow_redirects=False) as client:
            for _ in range(MAX_REDIRECTS + 1):
                response = client.get(url, headers=credentials.headers(url))
                if not response.is_redirect:
                    break
                url = urljoin(url, response.headers["location"])
        response.raise_for_status()
    except httpx.HTTPError as e:
        raise SettingsError(f"WARMUP_PROMPT_URL={redact(url)} could not be fetched: {e}") from None
    path = Path(tempfile.mkdtemp(prefix="comfy-gateway-warmup-")) / "warmup.json"
    path.write_bytes(response.content)
    log.info("WARMUP_PROMPT_URL %s fetched (%d bytes)", redact(url), len(response.content))
    return load_settings(warmup_prompt_file=path)


async def fetch_models(gateway: Gateway) -> None:
    """Start-up step: fetch MODELS_MANIFEST's models; raise ComfyStartError naming what failed."""
    settings = gateway.settings
    if settings.manifest_json is not None:  # comfyui-api's MANIFEST_JSON wins, as theirs
        source: Path | str | None = settings.manifest_json
        name = "MANIFEST_JSON"
    else:
        source, name = settings.models_manifest, f"MODELS_MANIFEST={settings.models_manifest}"
    if source is None:
        return
    try:
        await fetch_manifest(gateway.models, source)
    except (GatewayError, ValueError) as e:
        raise ComfyStartError(f"{name}: {e}") from e


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
        len(result.files),
    )


async def activate(app: FastAPI) -> None:
    """Start-up step: read ComfyUI's nodes and models, ready every workflow, mount the routes;
    then follow ComfyUI's model files."""
    gateway: Gateway = app.state.gateway
    registry: Registry = app.state.registry
    settings = gateway.settings
    try:
        catalog = await gateway.comfy.catalog()
    except GatewayError as e:
        raise ComfyStartError(f"cannot read ComfyUI's nodes and models: {e.message}") from e
    registry.activate(catalog, warmup_checkpoint(settings), model_urls=settings.model_downloads)
    mount(app, registry)
    gateway.models.watch.listeners.append(lambda: reactivate(app))
    gateway.models.watch.start(catalog.models, settings.model_watch_interval_s)


async def reactivate(app: FastAPI) -> None:
    """ComfyUI's model files changed: ready the workflows again and mount their routes anew."""
    gateway: Gateway = app.state.gateway
    registry: Registry = app.state.registry
    settings = gateway.settings
    started = time.monotonic()
    try:
        catalog = await gateway.comfy.catalog()
    except GatewayError as e:
        log.warning("ComfyUI's model files changed, but its nodes cannot be read now: %s", e)
        return
    registry.activate(catalog, warmup_checkpoint(settings), model_urls=settings.model_downloads)
    mount(app, registry)
    log.info(
        "ComfyUI's model files changed: workflow routes and /docs follow (%.0f ms)",
        1000 * (time.monotonic() - started),
    )
