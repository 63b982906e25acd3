"""What an API key reads through the /comfy passthrough: its own prompts and files, nothing else.

ComfyUI's queue, history and jobs API list every client's prompts, graphs included, and its
/view serves any file of its output, temp and input folders. With API keys on, a key (not an
admin key, which passes as with COMFY_PASSTHROUGH=full) gets ComfyUI's own answers narrowed to
the prompts it submitted through the passthrough: GET /queue, /history and /jobs are filtered
(their paging, `max_items`/`offset` and `limit`/`offset`, applied after the filter, as ComfyUI
would on a history of the key's own); GET /history/{id} and /jobs/{id} of another key's prompt,
and /view of a file that is neither an output of the key's prompts nor in its own folder of the
input folder (its uploads: app.compat.comfy.upload), are a 404, exactly as for one that
does not exist. GET /object_info leaves out of its lists of input files and folders those in
other keys' upload folders and jobs' input folders (`gw-…`). The filtered lists read ComfyUI's
whole answer. The query was parsed once (app.compat.comfy.parse): the file /view checks is
the one ComfyUI serves.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Container, Iterator
from typing import Any

from fastapi.responses import JSONResponse, Response

from app.compat.comfy.owners import OwnedPrompts
from app.compat.comfy.parse import FileRef, in_folder, target, view_file
from app.compat.comfy.rules import Endpoint, Kind
from app.core.bounded import BoundedMap
from app.core.errors import InvalidRequest, NotFound
from app.core.keys import GATEWAY_FOLDER_PREFIX, Caller
from app.core.limits import limit_for
from app.gateway import Gateway

KEEP_PROMPTS = 10_000  # ended prompts whose output files are remembered
VIEW_SCAN = 200  # a key's newest prompts whose outputs a /view may be found among


class ViewableFiles:
    """Which files a key may /view: the files in its own folder, its prompts' outputs."""

    def __init__(self) -> None:
        # An ended prompt's outputs never change: read from ComfyUI's history once.
        self._outputs: BoundedMap[str, frozenset[FileRef]] = BoundedMap(KEEP_PROMPTS)

    async def allows(
        self,
        folder: str | None,
        ref: FileRef,
        prompts: list[str],
        entry_of: Callable[[str], Awaitable[dict[str, Any] | None]],
    ) -> bool:
        """Whether `ref` is an input file in the key's `folder`, or an output of one of
        `prompts` (its own, newest first; those not yet in ComfyUI's history are asked for
        each time)."""
        if folder is not None and ref[0] == "input" and in_folder(ref[1], folder):
            return True
        for prompt_id in prompts[:VIEW_SCAN]:
            files = self._outputs.get(prompt_id)
            if files is None:
                entry = await entry_of(prompt_id)
                if entry is None:
                    continue  # still queued or running: no files yet
                files = frozenset(output_refs(entry.get("outputs")))
                self._outputs.put(prompt_id, files)
            if ref in files:
                return True
        return False


def output_refs(outputs: Any) -> Iterator[FileRef]:
    """Every file a history entry's outputs name (images, gifs, audio, video...)."""
    for node in (outputs or {}).values() if isinstance(outputs, dict) else ():
        for items in node.values() if isinstance(node, dict) else ():
            for item in items if isinstance(items, list) else ():
                if isinstance(item, dict) and isinstance(item.get("filename"), str):
                    yield view_ref(item)


def view_ref(given: dict[str, Any]) -> FileRef:
    """A file as /view's query (or a history entry, or an upload's answer) names it."""
    return (
        str(given.get("type") or "output"),
        str(given.get("subfolder") or ""),
        str(given.get("filename") or given.get("name") or ""),
    )


def paged(items: list[Any], max_items: int | None, offset: int) -> list[Any]:
    """ComfyUI's history paging: `max_items` from `offset`; a negative offset counts from the
    end (the newest `max_items`)."""
    if offset < 0 and max_items is not None:
        offset = len(items) - max_items
    kept = items[max(offset, 0) :]
    return kept[:max_items] if max_items is not None else kept


async def fetch(gateway: Gateway, path: str) -> tuple[int, bytes, str]:
    """ComfyUI's status, body and content type for a GET (small enough to hold)."""
    upstream = await gateway.comfy.forward("GET", path, [], None)
    try:
        return (
            upstream.status_code,
            await upstream.aread(),
            upstream.headers.get("content-type", ""),
        )
    finally:
        await upstream.aclose()


def _int(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer", location=name) from None


async def scoped(
    found: Endpoint, parts: tuple[str, ...], params: dict[str, str], gateway: Gateway,
    owned: OwnedPrompts, files: ViewableFiles, folder: str | None,
) -> Response | None:  # fmt: skip
    """A key's answer to a read its view narrows; None when the request goes on as it is."""
    if found.kind is Kind.ONE:
        if found.path_id not in owned:
            raise NotFound(f"no prompt {found.path_id!r} of this API key", location="prompt_id")
        return None
    if found.kind is Kind.VIEW:
        ref = view_file(params)
        if not await viewable(gateway, owned, files, folder, ref):
            raise NotFound(
                "no such file among this API key's prompts and uploads", location="filename"
            )
        return None
    rest = {k: v for k, v in params.items() if k not in ("max_items", "limit", "offset")}
    bare = target(parts, rest)  # the paging is applied here, after the filter
    offset = _int(params.get("offset"), "offset")
    if found.kind is Kind.NODES:
        everything = target(parts, params)
        return await _filtered(gateway, everything, lambda d: without_folders(d, folder))
    if found.kind is Kind.QUEUE_LIST:
        return await _filtered(gateway, target(parts, params), lambda d: _queue(d, owned))
    if found.kind is Kind.HISTORY:
        most = _int(params.get("max_items"), "max_items")
        return await _filtered(gateway, bare, lambda d: _history(d, owned, most, offset))
    if found.kind is Kind.JOBS:
        limit = _int(params.get("limit"), "limit")
        return await _filtered(gateway, bare, lambda d: _jobs(d, owned, limit, offset))
    return None


async def viewable(
    gateway: Gateway, owned: OwnedPrompts, files: ViewableFiles, folder: str | None, ref: FileRef
) -> bool:
    """Whether the key may read this file (/view, a mask's original_ref)."""
    prompts = owned.submitted.newest(owned.owner)
    return await files.allows(folder, ref, prompts, lambda p: entry(gateway, p))


async def entry(gateway: Gateway, prompt_id: str) -> dict[str, Any] | None:
    """A prompt's entry in ComfyUI's history (it has ended), or None."""
    status, raw, _ = await fetch(gateway, f"/history/{prompt_id}")
    try:
        found = json.loads(raw).get(prompt_id) if status == 200 else None
    except (ValueError, AttributeError):
        return None
    return found if isinstance(found, dict) else None


async def _filtered(gateway: Gateway, path: str, narrow: Callable[[Any], Any]) -> Response:
    status, raw, content_type = await fetch(gateway, path)
    if status != 200:  # ComfyUI's own refusal (a bad status filter...) goes back as it is
        return Response(raw, status_code=status, media_type=content_type or None)
    try:
        data = json.loads(raw)
    except ValueError:
        return Response(raw, status_code=status, media_type=content_type or None)
    return JSONResponse(narrow(data))


def without_folders(data: Any, own: str | None) -> Any:
    """ComfyUI's node list without the names in other keys' and jobs' folders: its combos list
    the input folder's files and, for the dataset nodes, every folder in it."""
    if isinstance(data, dict):
        return {k: without_folders(v, own) for k, v in data.items()}
    if isinstance(data, list):
        return [without_folders(v, own) for v in data if not foreign_path(v, own)]
    return data


def foreign_path(value: Any, own: str | None) -> bool:
    first = value.split("/", 1)[0] if isinstance(value, str) else ""
    return first.startswith(GATEWAY_FOLDER_PREFIX) and first != own


def _queue(data: Any, owned: Container[str]) -> Any:
    if not isinstance(data, dict):
        return data

    def mine(items: Any) -> list[Any]:
        return [i for i in items or [] if isinstance(i, list) and len(i) > 1 and i[1] in owned]

    return {**data, "queue_running": mine(data.get("queue_running")),
            "queue_pending": mine(data.get("queue_pending"))}  # fmt: skip


def _history(data: Any, owned: Container[str], most: int | None, offset: int | None) -> Any:
    if not isinstance(data, dict):
        return data
    mine = [(k, v) for k, v in data.items() if k in owned]
    return dict(paged(mine, most, -1 if offset is None else offset))


def _jobs(data: Any, owned: Container[str], limit: int | None, offset: int | None) -> Any:
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), list):
        return data
    mine = [j for j in data["jobs"] if isinstance(j, dict) and j.get("id") in owned]
    start = max(offset or 0, 0)
    page = mine[start : start + limit] if limit is not None else mine[start:]
    pagination = {"offset": start, "limit": limit, "total": len(mine),
                  "has_more": start + len(page) < len(mine)}  # fmt: skip
    return {**data, "jobs": page, "pagination": pagination}


async def check_quota(gateway: Gateway, caller: Caller, owned: Container[str]) -> None:
    """A key's passthrough prompt counts against its max_jobs like a job: its prompts still in
    ComfyUI's queue are added to its gateway jobs (checked now; a burst may pass together)."""
    if not limit_for(gateway.settings.key_limits, caller).max_jobs:
        return
    status, raw, _ = await fetch(gateway, "/queue")
    queued = 0
    if status == 200:
        data = _queue(json.loads(raw), owned)
        queued = len(data["queue_running"]) + len(data["queue_pending"])
    await gateway.quotas.check(caller, queued)
