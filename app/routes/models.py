"""GET /models (the model files ComfyUI can load, by folder), POST /models/download and the
state and events of downloads, GET /models/cache (what the gateway downloaded).

With API keys a key downloads only where KEY_LIMITS grants it `models` (admin keys always), and
sees only the downloads it asked for, and the sources of the models it downloaded."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from app.core.downloads import ModelCacheState, ModelDownloadRequest, ModelDownloadState
from app.core.schemas import ErrorResponse
from app.routes.deps import CallerDep, GatewayDep
from app.routes.json_body import StrictJsonRoute

router = APIRouter(tags=["models"], route_class=StrictJsonRoute)

DOWNLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ModelDownloadState,
        "description": "With `wait`: the file is in place (`fetched` false: it was there)",
    },
    400: {
        "model": ErrorResponse,
        "description": "A bad URL, folder or filename, or an address the address policy "
        "refuses (`location` says which)",
    },
    403: {
        "model": ErrorResponse,
        "description": "Downloads are off (MODEL_DOWNLOADS=false), or this API key may not "
        "download (or pin) models: KEY_LIMITS `models` grants it",
    },
    409: {
        "model": ErrorResponse,
        "description": "Another download is writing this file, or it is there with another sha256",
    },
    429: {
        "model": ErrorResponse,
        "description": "This API key has its KEY_LIMITS `max_downloads` in flight; see Retry-After",
    },
    502: {
        "model": ErrorResponse,
        "description": "The remote failed (after resuming MODEL_DOWNLOAD_RETRIES times), or "
        "sent other bytes than `sha256` or its size say: nothing was kept",
    },
    503: {"model": ErrorResponse, "description": "ComfyUI is not reachable"},
    507: {
        "model": ErrorResponse,
        "description": "No room: MODEL_CACHE_MAX_GB or the disk is taken by models in use or "
        "put there by hand",
    },
}


class DownloadList(BaseModel):
    downloads: list[ModelDownloadState] = Field(
        description="Downloads in flight and the last ones that ended, oldest first"
    )


@router.get(
    "/models",
    response_model=dict[str, list[str]],
    responses={503: {"model": ErrorResponse, "description": "ComfyUI is not reachable"}},
)
async def list_models(gateway: GatewayDep) -> dict[str, list[str]]:
    """Every model folder ComfyUI knows (`checkpoints`, `loras`, ...) with its files."""
    return await gateway.comfy.models()


@router.post(
    "/models/download",
    status_code=202,
    response_model=ModelDownloadState,
    responses=DOWNLOAD_ERRORS,
)
async def download_model(
    body: ModelDownloadRequest, gateway: GatewayDep, caller: CallerDep
) -> JSONResponse:
    """Download a model into one of ComfyUI's model folders: 202 at once with the download's
    state (`Location` names where to follow it), or with `wait` 200 once the file is in place.

    The file lands under a temporary name and is renamed into place only once its size (and
    `sha256`, when given) are right; the workflow enums and `/docs` list it before the download
    says `done`. A file already there under that name is not fetched again.
    """
    gateway.grants.check_download(caller, body)
    download = await gateway.models.request(body, owner=caller.id)
    if body.wait:
        await download.outcome("url")  # a failure raises, located at `url`
        return JSONResponse(download.state().model_dump(), status_code=200)
    location = {"Location": f"/models/downloads/{download.id}"}
    return JSONResponse(download.state().model_dump(), status_code=202, headers=location)


@router.get("/models/downloads", response_model=DownloadList)
async def list_downloads(gateway: GatewayDep, caller: CallerDep) -> DownloadList:
    """The downloads in flight, and the last ones that ended: with API keys, those this key
    asked for (an admin key: all)."""
    downloads = gateway.models.shown_to(caller)
    return DownloadList(downloads=[d.state() for d in downloads])


@router.get(
    "/models/downloads/{id}",
    response_model=ModelDownloadState,
    responses={404: {"model": ErrorResponse, "description": "Unknown here, or no longer kept"}},
)
async def download_state(id: str, gateway: GatewayDep, caller: CallerDep) -> ModelDownloadState:
    """One download: `status`, `bytes` of `total`, and how it ended."""
    return gateway.models.get(id, caller).state()


@router.get(
    "/models/downloads/{id}/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"},
        404: {"model": ErrorResponse, "description": "Unknown here, or no longer kept"},
    },
)
async def download_events(id: str, gateway: GatewayDep, caller: CallerDep) -> StreamingResponse:
    """A download's progress as Server-Sent Events: `progress` (the state, at most four times a
    second, as `bytes` grow), then `done` (the state) or `failed` (the error body)."""
    download = gateway.models.get(id, caller)

    async def frames() -> AsyncIterator[str]:
        async for state in download.follow():
            if state is None:
                yield ": keep-alive\n\n"
                continue
            event, data = "progress", state.model_dump()
            if state.status == "done":
                event = "done"
            elif state.status == "failed":
                event, data = "failed", state.error or {}
            yield f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(frames(), media_type="text/event-stream", headers=headers)


@router.get("/models/cache", response_model=ModelCacheState)
async def model_cache(gateway: GatewayDep, caller: CallerDep) -> ModelCacheState:
    """The models the gateway downloaded (least recently used first), their room and their use;
    files put there by hand are not listed. With API keys a model's `source` is shown only to
    the key that downloaded it (and to admin keys)."""
    return gateway.models.cache.state(caller)
