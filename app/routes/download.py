"""POST /download: comfyui-api's model download endpoint, on the model store.

Their body (`url`, `model_type`, `filename`, `wait`, `auth`) and their answers: 202 `started`
at once, or with `wait` 200 `completed` with `size` and `duration`; a failed download is their
400. Our protections stay: the address policy, KEY_LIMITS `models` (with API keys, a key
downloads only where it is granted; admin keys may), a plain file name, and a model first
downloaded with credentials handed only to a request that proves its own (app.models.proof).
`POST /models/download` is the same store with our fields and states.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.core.downloads import (
    DownloadAnswer,
    DownloadRequest,
    ModelDownloadRequest,
    without_userinfo,
)
from app.core.errors import DownloadFailed, InvalidRequest
from app.core.schemas import ErrorResponse
from app.models.transfer import name_in
from app.routes.deps import CallerDep, GatewayDep
from app.routes.json_body import StrictJsonRoute

router = APIRouter(tags=["models"], route_class=StrictJsonRoute)

ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"model": DownloadAnswer, "description": "With `wait`: the file is in place"},
    400: {
        "model": ErrorResponse,
        "description": "An unknown `model_type`, a bad URL or filename, an address the address "
        "policy refuses, or (with `wait`) a download that failed",
    },
    403: {
        "model": ErrorResponse,
        "description": "Downloads are off, this API key may not download models (KEY_LIMITS "
        "`models`), or the file was downloaded with credentials this request does not prove",
    },
    409: {"model": ErrorResponse, "description": "Another download is writing this file"},
    429: {"model": ErrorResponse, "description": "This key's KEY_LIMITS `max_downloads`"},
    507: {"model": ErrorResponse, "description": "No room (MODEL_CACHE_MAX_GB or the disk)"},
}


@router.post("/download", status_code=202, response_model=DownloadAnswer, responses=ANSWERS)
async def download(body: DownloadRequest, gateway: GatewayDep, caller: CallerDep) -> JSONResponse:
    """Download a model into a model folder (comfyui-api's endpoint): 202 `started` at once,
    or with `wait` 200 `completed` once the file is in place."""
    started = time.monotonic()
    gateway.grants.check_may_download(caller)
    await gateway.models.check_folder(body.model_type, "model_type")
    # Theirs names the file after the URL's last segment: that name, even where the same URL
    # was downloaded under another one before (the server's name only when the URL has none).
    filename = body.filename or name_in(body.url)
    request = ModelDownloadRequest(
        url=body.url, folder=body.model_type, filename=filename, wait=body.wait
    )
    download = await gateway.models.request(request, owner=caller.id, client_auth=body.auth)
    answer = DownloadAnswer(
        url=without_userinfo(body.url),
        model_type=body.model_type,
        filename=filename or "",
        status="started",
    )
    if not body.wait:
        return JSONResponse(answer.model_dump(exclude_none=True), status_code=202)
    try:
        filename = await download.outcome("url")
    except DownloadFailed as e:  # theirs: a failed download is a 400
        raise InvalidRequest(e.message, location=e.location, details=e.details) from None
    state = download.state()
    answer.filename, answer.status = filename, "completed"
    answer.size, answer.duration = state.bytes, round(time.monotonic() - started, 3)
    return JSONResponse(answer.model_dump(), status_code=200)
