"""Answering a job over HTTP, for every route that takes one (/prompt, workflows, facades).

A job is answered with its outputs (200, streamed), with 202 when a webhook or an asynchronous
upload will carry them, or with its event stream when the client accepts `text/event-stream`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from app.comfy.graph import Graph
from app.core.options import JobOptions
from app.core.records import JobRecord
from app.core.schemas import Accepted, ErrorResponse, PromptResponse
from app.gateway import Gateway

ERRORS: dict[int | str, dict[str, Any]] = {
    202: {
        "model": Accepted,
        "description": "With `webhook`/`webhook_v2`: accepted, delivered later",
    },
    400: {"model": ErrorResponse, "description": "Invalid body, or ComfyUI refused the graph"},
    409: {"model": ErrorResponse, "description": "Interrupted, or the id is already running"},
    413: {"model": ErrorResponse, "description": "Body over MAX_BODY_SIZE_MB"},
    429: {"model": ErrorResponse, "description": "Queue full (MAX_QUEUE_DEPTH); see Retry-After"},
    502: {"model": ErrorResponse, "description": "A node failed while executing"},
    503: {"model": ErrorResponse, "description": "ComfyUI is down or restarting; see Retry-After"},
    504: {"model": ErrorResponse, "description": "The job ran past PROMPT_TIMEOUT_S"},
}

SSE_HEARTBEAT_S = 15.0


async def run_job(
    request: Request,
    options: JobOptions,
    graph: Graph,
    echo_input: dict[str, Any] | None = None,
    workflow: str = "prompt",
) -> Response:
    """Run one job for any route that takes one (/prompt, the workflow endpoints).

    `workflow` names what built the graph (`prompt`, `sd15/txt2img`) in logs and metrics.

    Answers with the outputs (200), with 202 when a webhook will carry them, or with the
    job's event stream when the client accepts `text/event-stream`.
    """
    gateway: Gateway = request.app.state.gateway
    job = await gateway.start_job(
        options.id or str(uuid.uuid4()), graph, options, echo_input=echo_input, workflow=workflow
    )
    if "text/event-stream" in request.headers.get("accept", ""):
        return event_stream(job.record)
    if options.answered_at_once:
        accepted = Accepted(id=job.id, prompt=job.prompt, status="ok")
        return JSONResponse(accepted.model_dump(), status_code=202)
    assert job.task is not None
    result = await job.task
    return StreamingResponse(json_chunks(result), media_type="application/json")


STREAM_CHUNK = 1 << 20


def json_chunks(result: PromptResponse) -> Iterator[bytes]:
    """The response JSON in pieces, so a large output is never copied whole into the body.

    Serialising at once would add a full copy of every base64 output, and the socket's send
    buffer another: a 50 MB video would cost three copies instead of one.
    """
    head = result.model_dump_json(exclude={"images"})
    yield head[:-1].encode() + b',"images":['
    for index, content in enumerate(result.images):
        yield b',"' if index else b'"'
        # base64 and URLs need no JSON escaping; anything else goes through the encoder
        if _plain(content):
            for start in range(0, len(content), STREAM_CHUNK):
                yield content[start : start + STREAM_CHUNK].encode("ascii")
        else:
            yield json.dumps(content)[1:-1].encode()
        yield b'"'
    yield b"]}"


def _plain(text: str) -> bool:
    return text.isascii() and text.isprintable() and not any(c in text for c in '"\\')


def event_stream(record: JobRecord, after: int = 0) -> StreamingResponse:
    async def frames() -> AsyncIterator[str]:
        async for event in record.follow(after, idle_s=SSE_HEARTBEAT_S):
            if event is None:
                yield ": keep-alive\n\n"  # a comment keeps proxies from closing a quiet stream
                continue
            data = json.dumps(event.data, separators=(",", ":"))
            yield f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(frames(), media_type="text/event-stream", headers=headers)
