"""MODELS_MANIFEST: the models a gateway fetches at start-up, before `/ready` turns 200.

    # models.yaml: a list, or `models:` holding one
    - url: https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors
      folder: checkpoints
      sha256: <the file's SHA-256, hex: other bytes are deleted and stop start-up>
    - url: s3://models/loras/style.safetensors
      folder: loras
      filename: style-v2.safetensors

The entries are the operator's: pinned (never evicted, not counted in MODEL_CACHE_MAX_GB), and
their URLs skip the address policy. A file already in its folder under its name (the URL's
last path segment when `filename` is not given) is not fetched again. Three files come at a
time; the log says every 10 s how far each one is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from app.core.downloads import ModelDownloadRequest
from app.models.cache import size_text
from app.models.downloads import Download
from app.models.transfer import name_in

if TYPE_CHECKING:
    from app.models.store import ModelStore

log = logging.getLogger(__name__)

AT_ONCE = 3
REPORT_S = 10.0


def read_manifest(path: Path | str) -> list[ModelDownloadRequest]:
    """The manifest's entries (from a file, or MANIFEST_JSON's text); ValueError naming the
    first bad one."""
    try:
        loaded: Any = yaml.safe_load(path.read_text() if isinstance(path, Path) else path)
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"cannot be read: {e}") from None
    if isinstance(loaded, dict) and (
        isinstance(loaded.get("models"), dict) or set(loaded) & {"apt", "pip", "custom_nodes"}
    ):
        loaded = their_models(loaded)  # comfyui-api's format
    items = loaded.get("models") if isinstance(loaded, dict) else loaded
    if not isinstance(items, list):
        raise ValueError("must hold a list of {url, folder, filename?, sha256?} (or `models:`)")
    entries = []
    for number, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise ValueError(f"entry {number} is not a mapping of url, folder, filename, sha256")
        try:
            entry = ModelDownloadRequest.model_validate({**item, "pin": True})
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in e.errors())
            raise ValueError(f"entry {number}: {problems}") from None
        if entry.filename is None:  # present by its URL's name: not fetched again
            entry.filename = name_in(entry.url)
        entries.append(entry)
    return entries


def their_models(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """comfyui-api's manifest (`models.before_start`/`after_start` of `{url, local_path}`) as
    our entries: the folder is local_path's parent's name, the file its name. Both lists are in
    place before `/ready` here (theirs fetches `after_start` in the background). Its `apt`,
    `pip` and `custom_nodes` were installed before ComfyUI started (app.install)."""
    unknown = set(manifest) - {"apt", "pip", "custom_nodes", "models"}
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))}")
    models = manifest.get("models") or {}
    entries = []
    for phase in ("before_start", "after_start"):
        for number, item in enumerate(models.get(phase) or [], 1):
            path = str(item.get("local_path", "")) if isinstance(item, dict) else ""
            if "/" not in path.strip("/"):
                raise ValueError(
                    f"models.{phase} entry {number}: local_path must be a file in a model "
                    "folder, e.g. /opt/ComfyUI/models/checkpoints/x.safetensors"
                )
            parent, name = PurePosixPath(path).parent.name, PurePosixPath(path).name
            entries.append({"url": item.get("url"), "folder": parent, "filename": name})
    return entries


async def fetch_manifest(store: ModelStore, path: Path | str) -> None:
    """Have every model of the manifest in place; a GatewayError or ValueError says which not."""
    entries = read_manifest(path)
    started = time.monotonic()
    log.info("manifest: %d model(s)", len(entries))
    at_once = asyncio.Semaphore(AT_ONCE)
    running: list[Download] = []

    async def one(number: int, entry: ModelDownloadRequest) -> Download:
        async with at_once:
            where = f"MODELS_MANIFEST entry {number}"
            download = await store.request(entry, trusted=True, where=where)
            running.append(download)
            await download.outcome(where)
            return download

    reporter = asyncio.create_task(report(running))
    try:
        done = await asyncio.gather(*(one(n, e) for n, e in enumerate(entries, 1)))
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
    fetched = sum(d.fetched for d in done)
    log.info(
        "MODELS_MANIFEST: %d model(s) in place in %.1fs (%d fetched, %d there already)",
        len(done), time.monotonic() - started, fetched, len(done) - fetched,
    )  # fmt: skip


async def report(running: list[Download]) -> None:
    """Every REPORT_S, how far each download in flight is."""
    while True:
        await asyncio.sleep(REPORT_S)
        for download in running:
            transfer = download.transfer
            if download.finished or transfer is None:
                continue
            seconds = max(time.monotonic() - download.started, 1e-3)
            total = f" of {size_text(transfer.total)}" if transfer.total else ""
            share = f"{100 * transfer.have // transfer.total}% " if transfer.total else ""
            log.info(
                "MODELS_MANIFEST: %s/%s %s(%s%s, %s/s)",
                download.spec.folder, download.filename or download.spec.filename or "?", share,
                size_text(transfer.have), total, size_text(transfer.received / seconds),
            )  # fmt: skip
