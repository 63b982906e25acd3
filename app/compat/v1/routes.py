"""The /api/v1 routes: POST and GET /api/v1/prompts, GET /api/v1/images/{digest}[/{name}]."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from app.comfy.graph import Graph, check_graph
from app.compat.comfy.ws import check_running
from app.compat.v1.answer import answer, file_response
from app.compat.v1.request import read_graph
from app.compat.v1.state import AnswersDep, V1State, V1StateDep
from app.core.errors import (
    ExecutionFailed,
    InsufficientStorage,
    InvalidRequest,
    NotFound,
)
from app.core.options import JobOptions
from app.core.schemas import ErrorResponse
from app.jobs.canonical import digest
from app.jobs.result_cache import CachedResult, ResultCache
from app.routes.deps import CallerDep, GatewayDep, InputCapsDep, ResultCacheDep
from app.routes.respond import CacheUse, cache_key

router = APIRouter(prefix="/api/v1", tags=["blocking API (/api/v1)"])


def install(app: FastAPI) -> None:
    app.state.prompts_v1 = V1State()
    app.include_router(router)


ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The main output file (with `Accept: image/png` or its type), or "
        '`{"urls": [...]}`; headers `Digest`, `Location`, `Content-Disposition`',
        "content": {"application/json": {}, "image/png": {}},
    },
    204: {"description": "The job ran and saved no file"},
    400: {"model": ErrorResponse, "description": "Not a graph, or ComfyUI refused it"},
    429: {"model": ErrorResponse, "description": "Queue full (MAX_QUEUE_DEPTH); see Retry-After"},
    500: {"model": ErrorResponse, "description": "A node failed while executing"},
    503: {"model": ErrorResponse, "description": "ComfyUI is down or restarting"},
    504: {"model": ErrorResponse, "description": "The job ran past PROMPT_TIMEOUT_S"},
    507: {"model": ErrorResponse, "description": "A disk is full"},
}


@router.post("/prompts", responses=ANSWERS, response_class=Response)
async def generate(
    request: Request,
    gateway: GatewayDep,
    state: V1StateDep,
    caller: CallerDep,
    caps: InputCapsDep,
    results: ResultCacheDep,
    cache_external_inputs: bool = Query(
        False,
        description="Also answer from the result cache when the graph reads URLs or files in "
        "ComfyUI's input folder (their content may have changed)",
    ),
) -> Response:
    """Run a graph (ComfyUI's API format, the bare graph or `{"prompt": graph}`) and answer
    when it has ended: `{"urls": [...]}`, or the last output file itself with
    `Accept: image/png` (or the file's type). `multipart/form-data`: a `prompt` part and files
    that the graph's loader inputs name. `Digest: SHA256=<hex>` is the SHA-256 of the graph's
    RFC 8785 canonical JSON (files inlined), and `GET /api/v1/images/<hex>` serves the result.
    With RESULT_CACHE_MAX_MB, a request answered before is answered from the cache
    (`Cache-Control: no-cache` runs it anyway).
    """
    graph: Graph = await read_graph(request, gateway.settings.max_body_size_bytes, caps)
    check_graph(graph)
    try:
        key = digest(graph)
    except ValueError as e:
        raise InvalidRequest(f"the graph cannot be read as JSON: {e}", location="body") from None
    use = consult(
        request, results, graph, cache_key(key, caller), external_ok=cache_external_inputs
    )
    headers = {"Digest": f"SHA256={key}", **use.headers()}
    accept = request.headers.get("accept")
    if use.hit is not None:
        return answer(use.hit.files, key, accept, headers)
    job = await gateway.door.start_job(
        str(uuid.uuid4()), graph, JobOptions(), caller=caller, workflow="api/v1"
    )
    state.remember(cache_key(key, caller), job.id, job.record.prompt_id, graph, caller.id)
    assert job.task is not None
    try:
        outcome = await asyncio.shield(job.task)  # a client that leaves does not cancel the job
    except ExecutionFailed as e:
        return node_failed(e, headers)
    use.keep(CachedResult.of(outcome))  # the files by reference: nothing is read or copied
    headers.update(use.headers())
    return answer(outcome.files, key, accept, headers)


def consult(
    request: Request, store: ResultCache | None, graph: Graph, key: str, *, external_ok: bool
) -> CacheUse:
    """The result cache for this request: on by default, `Cache-Control` may say otherwise."""
    if store is None:
        return CacheUse()
    directives = {d.strip().lower() for d in request.headers.get("cache-control", "").split(",")}
    no_store = "no-store" in directives
    read = not (no_store or "no-cache" in directives or "max-age=0" in directives)
    return CacheUse.consult(
        store, graph, key, external_ok=external_ok, read=read, write=not no_store
    )


def node_failed(error: ExecutionFailed, headers: dict[str, str]) -> Response:
    """A node's failure as the spec answers it: 500 (POST /prompt says 502), 507 for a full disk."""
    details = error.details or {}
    text = f"{details.get('exception_type', '')} {details.get('exception_message', '')}"
    if "No space left on device" in text or "[Errno 28]" in text:
        full = InsufficientStorage(error.message, location=error.location, details=details)
        return JSONResponse(full.body(), status_code=full.status, headers=headers)
    return JSONResponse(error.body(), status_code=500, headers=headers)


@router.get(
    "/prompts",
    responses={404: {"model": ErrorResponse, "description": "ComfyUI's history is empty"}},
)
async def last_prompt(gateway: GatewayDep, state: V1StateDep, caller: CallerDep) -> JSONResponse:
    """The last prompt ComfyUI ran (from any client), as a bare graph that can be POSTed
    again; for a /api/v1/prompts job, the graph as its request sent it. With API keys, a key
    (not an admin key) gets the last graph it sent to /api/v1/prompts itself."""
    if caller.tenant:  # ComfyUI's last prompt may be another key's
        if caller.id not in state.last:
            raise NotFound("this API key has sent no prompt to /api/v1/prompts here")
        return JSONResponse(state.last[caller.id])
    check_running(gateway)
    upstream = await gateway.comfy.forward("GET", "/history?max_items=1", [], None)
    try:
        raw = await upstream.aread()
    finally:
        await upstream.aclose()
    try:
        history: Any = json.loads(raw) if upstream.status_code == 200 else {}
        entry: Any = list(history.values())[-1]  # ComfyUI lists its history oldest first
        prompt_id, graph = entry["prompt"][1], entry["prompt"][2]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        raise NotFound("ComfyUI's history holds no prompt") from None
    return JSONResponse(state.graphs.get(prompt_id, graph))


@router.get(
    "/images/{digest}",
    response_class=Response,
    responses={
        200: {"description": "The main output file", "content": {"image/png": {}}},
        404: {"model": ErrorResponse, "description": "No result for this digest here"},
    },
)
async def image(digest: str, answers: AnswersDep) -> Response:
    """The main output (the last file) of the request whose digest this is."""
    files = await answers.files(digest)
    if not files:
        raise NotFound(f"the request {digest} saved no file", location="digest")
    return file_response(files[-1], {})


@router.get(
    "/images/{digest}/{name}",
    response_class=Response,
    responses={
        200: {"description": "One output file", "content": {"image/png": {}}},
        404: {"model": ErrorResponse, "description": "No such result or file here"},
    },
)
async def image_file(digest: str, name: str, answers: AnswersDep) -> Response:
    """One output file, by name, of the request whose digest this is."""
    for file in await answers.files(digest):
        if file.name == name:
            return file_response(file, {})
    raise NotFound(f"the request {digest} saved no file {name!r}", location="name")
