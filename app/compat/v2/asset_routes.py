"""/api/v2/assets: upload (multipart), from-hash, by-hash, get, content (with Range), delete.

Uploads go to ComfyUI's input folder through its upload endpoint, as the proxy sends them (with
API keys, into the key's own folder there, as the passthrough's uploads: no key's workflow can
name another's files); their content streams back from ComfyUI's `/view`. A job's outputs are
assets too (`<job id>.<n>`): the gateway serves them from the job's outcome, with Range,
streamed from the file (the spool on disk, for a large one; a range read from its first byte).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from app.compat.comfy.parse import plain_name
from app.compat.comfy.proxy import RelayResponse
from app.compat.comfy.upload import folder_of
from app.compat.comfy.ws import check_running
from app.compat.file_body import ranged
from app.compat.v2 import envelope
from app.compat.v2.assets import PlacementError, content_hash, placement
from app.compat.v2.envelope import V2JSON, base_url, error, get_and_head, iso, now
from app.compat.v2.job_routes import known_job, output_of
from app.compat.v2.state import V2StateDep
from app.compat.v2.submission import output_id_parts
from app.core import strict_json
from app.core.errors import InputError, InvalidRequest
from app.core.keys import Caller
from app.gateway import Gateway
from app.routes.deps import CallerDep, GatewayDep, InputCapsDep

router = APIRouter(prefix=envelope.PREFIX, tags=["Comfy API v2"])

UNAVAILABLE = "Retrying cannot help; re-execute with a changed prompt hash."


@router.post("/assets", response_class=V2JSON)
async def upload(
    request: Request,
    gateway: GatewayDep,
    state: V2StateDep,
    caller: CallerDep,
    caps: InputCapsDep,
) -> Response:
    """Upload `file` (multipart) to `file_path` in ComfyUI's input folder; identical bytes are
    one asset (200, `created_new: false`), new ones 201. A file over the input caps
    (app.media.caps) is a 400 and never reaches ComfyUI."""
    if not request.headers.get("content-type", "").startswith("multipart/"):
        return error(422, "invalid_request", "Expected multipart/form-data.")
    try:
        form = await request.form(max_part_size=gateway.settings.max_body_size_bytes)
    except HTTPException:
        return error(422, "invalid_request", "Malformed multipart body.")
    try:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            return error(422, "invalid_request", "Missing 'file' part.")
        fields = {k: str(v).strip() for k, v in form.multi_items() if isinstance(v, str)}
        file_path = fields.get("file_path")
        if not file_path:
            return error(422, "invalid_request", "Missing 'file_path'.")
        try:
            is_model, path = placement(file_path)
        except PlacementError as e:
            return error(422, "invalid_request", str(e))
        try:
            caps.check_bytes(file.size or 0, "file")  # before it is read into memory
            data = await file.read()
            await caps.check_off_loop(data, "file")
        except InputError as e:
            return envelope.render(e)
        content_type = fields.get("content_type") or file.content_type or "application/octet-stream"
    finally:
        await form.close()
    digest = await asyncio.to_thread(content_hash, data)
    expected = fields.get("expected_hash")
    if expected and expected.lower() != digest:
        message = "Client-declared hash does not match the received bytes."
        return error(409, "hash_mismatch", message)
    base = base_url(request)
    if (existing := state.assets.by_hash(digest, caller)) is not None:
        return V2JSON(existing.body(base, created_new=False))
    if is_model:
        message = (
            "Model-directory placement is not available through the gateway: put model files "
            "in its model folder (MODEL_DIR)."
        )
        return error(422, "invalid_request", message)
    stored = await upload_input(gateway, caller, path, data, content_type)
    if isinstance(stored, Response):
        return stored
    asset = state.assets.add(
        hash=digest,
        size_bytes=len(data),
        content_type=content_type,
        file_path=file_path,
        filename=stored.get("name", path.rsplit("/", 1)[-1]),
        subfolder=stored.get("subfolder", path.rpartition("/")[0]),
        owner=caller.id,
    )
    return V2JSON(asset.body(base, created_new=True), status_code=201)


async def upload_input(
    gateway: Gateway, caller: Caller, path: str, data: bytes, content_type: str
) -> dict[str, Any] | Response:
    """Hand a file to ComfyUI's upload endpoint; its answer (name, subfolder), or the error.
    With API keys the file goes into the key's own folder (app.compat.comfy.upload)."""
    given, _, name = path.rpartition("/")
    try:
        subfolder = folder_of(given, caller)
        plain_name(name, "file_path")
    except InvalidRequest as e:
        return error(422, "invalid_request", e.message)
    form = {"type": "input", **({"subfolder": subfolder} if subfolder else {})}
    built = httpx.Request(
        "POST",
        "http://comfyui/upload/image",
        files={"image": (name, data, content_type)},
        data=form,
    )
    check_running(gateway)  # ComfyUI down: 503 upstream_unreachable, with Retry-After
    upstream = await gateway.comfy.forward(
        "POST", "/upload/image", [("content-type", built.headers["content-type"])], built.read()
    )
    try:
        answer = await upstream.aread()
    finally:
        await upstream.aclose()
    try:
        stored: dict[str, Any] = json.loads(answer) if upstream.status_code == 200 else {}
    except ValueError:
        stored = {}
    if not stored:
        return error(500, "upstream_error", "ComfyUI rejected the upload.")
    return stored


@router.post("/assets/from-hash", response_class=V2JSON)
async def from_hash(request: Request, state: V2StateDep, caller: CallerDep) -> Response:
    """The asset with these bytes, by `{"hash": "blake3:…"}`: 200, or 404 `blob_not_found`."""
    body = await strict_json.read(await request.body())  # not JSON: a located 400
    hash_ = body.get("hash") if isinstance(body, dict) else None
    if not isinstance(hash_, str):
        return error(422, "invalid_request", "Missing 'hash'.")
    asset = state.assets.by_hash(hash_, caller)
    if asset is None:
        return error(404, "blob_not_found", "No blob the caller may mint from.")
    return V2JSON(asset.body(base_url(request), created_new=False))


@router.post("/assets/from-path", response_class=V2JSON)
async def from_path() -> Response:
    """Not offered: the proxy's own answer when it shares no folder with ComfyUI."""
    message = (
        "Host-path registration is not available through the gateway; upload the file instead."
    )
    return error(422, "invalid_request", message)


@router.head("/assets/by-hash/{hash_}")
async def by_hash(hash_: str, state: V2StateDep, caller: CallerDep) -> Response:
    """200 when an asset has these bytes, else 404; no body."""
    found = state.assets.by_hash(hash_, caller)
    return Response(status_code=200 if found else 404)


@get_and_head(router, "/assets/{asset_id}")
async def get_asset(
    asset_id: str, request: Request, gateway: GatewayDep, state: V2StateDep, caller: CallerDep
) -> Response:
    """An uploaded asset, or a job's output."""
    base = base_url(request)
    if (asset := state.assets.get(asset_id, caller)) is not None:
        return V2JSON(asset.body(base))
    found = await output_of(gateway, state, caller, asset_id)
    ids = output_id_parts(asset_id)
    if found is None or ids is None:
        return error(404, "not_found", "Unknown asset id.")
    job = known_job(state, ids[0], caller)
    moment = now()
    created = job.completed_at if job and job.completed_at else moment
    return V2JSON(
        {
            "id": asset_id,
            "hash": None,
            "size_bytes": found.size,
            "content_type": found.content_type,
            "file_path": found.name,
            "created_at": iso(created),
            "url": f"{base}/api/v2/assets/{asset_id}/content",
            "url_expires_at": iso(moment + envelope.RETENTION),
            "job_id": ids[0],
        }
    )


@get_and_head(router, "/assets/{asset_id}/content", Response)
async def content(
    asset_id: str, request: Request, gateway: GatewayDep, state: V2StateDep, caller: CallerDep
) -> Response:
    """The bytes of an asset or an output; `Range` gives 206 (416 when it cannot be met)."""
    if (asset := state.assets.get(asset_id, caller)) is not None:
        query = urlencode(
            {"filename": asset.filename, "subfolder": asset.subfolder, "type": "input"}
        )
        return await view(gateway, request.headers.get("range"), f"/view?{query}")
    ids = output_id_parts(asset_id)
    if ids is None or known_job(state, ids[0], caller) is None:
        return error(404, "not_found", "Unknown asset id.")
    found = await output_of(gateway, state, caller, asset_id)
    if found is None:
        message = f"Output bytes are no longer kept by the gateway. {UNAVAILABLE}"
        return error(404, "output_unavailable", message)
    return ranged(found, request.headers.get("range"))  # streamed from the file, a range seeked


async def view(gateway: Gateway, range_: str | None, target: str) -> Response:
    """A file of ComfyUI's input folder, streamed, with the client's Range passed on."""
    check_running(gateway)
    headers = [("range", range_)] if range_ is not None else []
    upstream = await gateway.comfy.forward("GET", target, headers, None)
    if upstream.status_code not in (200, 206, 416):
        await upstream.aclose()
        if upstream.status_code == 404:
            message = f"Output bytes are no longer retrievable upstream. {UNAVAILABLE}"
            return error(404, "output_unavailable", message)
        message = "ComfyUI returned an unexpected status for the output."
        return error(502, "upstream_error", message)
    relayed = {
        name: upstream.headers[name]
        for name in ("content-type", "content-length", "content-range", "accept-ranges")
        if name in upstream.headers
    }
    timeout_s = gateway.settings.passthrough_timeout_s
    return RelayResponse(upstream, target, timeout_s, headers=list(relayed.items()))


@router.delete("/assets/{asset_id}", status_code=204, response_class=Response)
async def delete_asset(asset_id: str, state: V2StateDep, caller: CallerDep) -> Response:
    """Forget an uploaded asset (its file stays in ComfyUI's input folder, as with the proxy)."""
    if not state.assets.delete(asset_id, caller):
        return error(404, "not_found", "Unknown asset id.")
    return Response(status_code=204)
