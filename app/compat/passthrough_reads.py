"""What an API key reads through the /comfy passthrough: its own prompts, and nothing else.

ComfyUI's queue, history and jobs API list every client's prompts, graphs included, and its
/view serves any file of its output, temp and input folders. With API keys on, a key (not an
admin key, which passes as with COMFY_PASSTHROUGH=full) gets ComfyUI's own answers narrowed to
the prompts it submitted through the passthrough: GET /queue, /history and /jobs are filtered
(their paging, `max_items`/`offset` and `limit`/`offset`, applied after the filter, as ComfyUI
would on a history of the key's own); GET /history/{id} and /jobs/{id} of another key's prompt,
and /view of a file that is neither an output of the key's prompts nor a file it uploaded, are a
404, exactly as for one that does not exist. The filtered lists read ComfyUI's whole answer.

Uploads (POST /upload/image and /upload/mask) are held to the input caps before they go on, for
every caller the rules apply to: the body is read whole (it is at most MAX_BODY_SIZE_MB) and
each file part is checked (app.jobs.input_caps: bytes, an image's frames and pixels).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Container, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile

from app.compat.passthrough import Endpoint, Kind, OwnedPrompts
from app.core.errors import InvalidRequest, NotFound
from app.core.keys import Caller
from app.core.limits import limit_for
from app.gateway import Gateway
from app.jobs.input_caps import InputCaps

FileRef = tuple[str, str, str]  # type, subfolder, filename: what /view names a file by
KEEP_PROMPTS = 10_000  # ended prompts whose output files are remembered
KEEP_UPLOADS = 10_000
VIEW_SCAN = 200  # a key's newest prompts whose outputs a /view may be found among
UPLOAD_PARTS = 16


class ViewableFiles:
    """Which files each key may /view: its prompts' outputs and its own uploads."""

    def __init__(self) -> None:
        # An ended prompt's outputs never change: read from ComfyUI's history once.
        self._outputs: OrderedDict[str, frozenset[FileRef]] = OrderedDict()
        self._uploads: OrderedDict[tuple[str | None, FileRef], None] = OrderedDict()

    def uploaded(self, owner: str | None, ref: FileRef) -> None:
        self._uploads[(owner, ref)] = None
        while len(self._uploads) > KEEP_UPLOADS:
            self._uploads.popitem(last=False)

    async def allows(
        self,
        owner: str | None,
        ref: FileRef,
        prompts: list[str],
        entry_of: Callable[[str], Awaitable[dict[str, Any] | None]],
    ) -> bool:
        """Whether `ref` is a file this key uploaded, or an output of one of `prompts` (its
        own, newest first; those not yet in ComfyUI's history are asked for each time)."""
        if (owner, ref) in self._uploads:
            return True
        for prompt_id in prompts[:VIEW_SCAN]:
            files = self._outputs.get(prompt_id)
            if files is None:
                entry = await entry_of(prompt_id)
                if entry is None:
                    continue  # still queued or running: no files yet
                files = frozenset(output_refs(entry.get("outputs")))
                self._outputs[prompt_id] = files
                while len(self._outputs) > KEEP_PROMPTS:
                    self._outputs.popitem(last=False)
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


async def fetch(gateway: Gateway, target: str) -> tuple[int, bytes, str]:
    """ComfyUI's status, body and content type for a GET (small enough to hold)."""
    upstream = await gateway.comfy.forward("GET", target, [], None)
    try:
        return (
            upstream.status_code,
            await upstream.aread(),
            upstream.headers.get("content-type", ""),
        )
    finally:
        await upstream.aclose()


def _query(target: str, dropped: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """The target without the paging parameters (handled here), and those parameters."""
    path, _, query = target.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    paging = {k: v for k, v in reversed(pairs) if k in dropped}  # aiohttp reads the first
    rest = urlencode([(k, v) for k, v in pairs if k not in dropped])
    return (f"{path}?{rest}" if rest else path), paging


def _int(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer", location=name) from None


async def scoped(
    found: Endpoint, request: Request, gateway: Gateway, owned: OwnedPrompts,
    files: ViewableFiles, target: str,
) -> Response | None:  # fmt: skip
    """A key's answer to a read its view narrows; None when the request goes on as it is."""
    if found.kind is Kind.ONE:
        if found.path_id not in owned:
            raise NotFound(f"no prompt {found.path_id!r} of this API key", location="prompt_id")
        return None
    if found.kind is Kind.VIEW:
        ref = view_ref(dict(request.query_params))
        prompts = owned.submitted.newest(owned.owner)
        if not await files.allows(owned.owner, ref, prompts, lambda p: entry(gateway, p)):
            raise NotFound(
                "no such file among this API key's prompts and uploads", location="filename"
            )
        return None
    if found.kind is Kind.QUEUE_LIST:
        return await _filtered(gateway, target, lambda data: _queue(data, owned))
    if found.kind is Kind.HISTORY:
        bare, paging = _query(target, ("max_items", "offset"))
        most, offset = (
            _int(paging.get("max_items"), "max_items"),
            _int(paging.get("offset"), "offset"),
        )
        return await _filtered(gateway, bare, lambda data: _history(data, owned, most, offset))
    if found.kind is Kind.JOBS:
        bare, paging = _query(target, ("limit", "offset"))
        limit, offset = _int(paging.get("limit"), "limit"), _int(paging.get("offset"), "offset")
        return await _filtered(gateway, bare, lambda data: _jobs(data, owned, limit, offset))
    return None


async def entry(gateway: Gateway, prompt_id: str) -> dict[str, Any] | None:
    """A prompt's entry in ComfyUI's history (it has ended), or None."""
    status, raw, _ = await fetch(gateway, f"/history/{prompt_id}")
    try:
        found = json.loads(raw).get(prompt_id) if status == 200 else None
    except (ValueError, AttributeError):
        return None
    return found if isinstance(found, dict) else None


async def _filtered(gateway: Gateway, target: str, narrow: Callable[[Any], Any]) -> Response:
    status, raw, content_type = await fetch(gateway, target)
    if status != 200:  # ComfyUI's own refusal (a bad status filter...) goes back as it is
        return Response(raw, status_code=status, media_type=content_type or None)
    try:
        data = json.loads(raw)
    except ValueError:
        return Response(raw, status_code=status, media_type=content_type or None)
    return JSONResponse(narrow(data))


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


async def checked_upload(request: Request, caps: InputCaps) -> bytes:
    """The body of a passthrough upload, each file part held to the input caps (a 400 located
    at the part's field, e.g. `image`) before any of it reaches ComfyUI."""
    body = await request.body()  # starlette then parses the form from these same bytes
    try:
        form = await request.form(max_files=UPLOAD_PARTS, max_fields=UPLOAD_PARTS)
    except HTTPException as e:
        raise InvalidRequest(f"the upload is not a form ComfyUI can read: {e.detail}") from None
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                caps.check_bytes(value.size or 0, name)
                await caps.check_off_loop(await value.read(), name)
    finally:
        await form.close()
    return body


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
    await gateway.check_quota(caller, queued)
