"""POST /prompt (run any graph), GET /prompt/{id} (its state), its events, POST /interrupt."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from app.comfy.graph import Graph
from app.core.errors import InvalidRequest, NotFound
from app.core.options import JobOptions
from app.core.records import JobRecord
from app.core.schemas import (
    Accepted,
    ErrorResponse,
    InterruptRequest,
    InterruptResponse,
    JobState,
    Progress,
    PromptRequest,
    PromptResponse,
)
from app.gateway import Gateway

router = APIRouter(tags=["prompts"])

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
    gateway.check_accepting()
    job = await gateway.jobs.start(
        options.id or str(uuid.uuid4()), graph, options, echo_input=echo_input, workflow=workflow
    )
    if "text/event-stream" in request.headers.get("accept", ""):
        return event_stream(job.record)
    if options.answered_at_once:
        accepted = Accepted(id=job.id, prompt=job.graph, status="ok")
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


@router.post("/prompt", response_model=PromptResponse, responses=ERRORS)
async def run_prompt(body: PromptRequest, request: Request) -> Response:
    """Run a ComfyUI API-format graph and answer with every output file, base64-encoded.

    With `Accept: text/event-stream` the answer is the job's event stream instead (as
    `GET /prompt/{id}/events`), ending with `complete` (the 200 body) or `failed`.
    """
    return await run_job(request, body, body.graph())


def job_record(request: Request, request_id: str) -> JobRecord:
    gateway: Gateway = request.app.state.gateway
    record = gateway.jobs.history.get(request_id)
    if record is None:
        raise NotFound(
            f"this gateway process knows no job {request_id!r} (unknown, or finished too long ago)",
            location="id",
        )
    return record


@router.get(
    "/prompt/{id}",
    response_model=JobState,
    responses={404: {"model": ErrorResponse, "description": "Unknown here, or no longer kept"}},
)
async def job_state(id: str, request: Request) -> JobState:
    """The state of a job this gateway process ran: status, progress, and its result or error."""
    record = job_record(request, id)
    position = None
    if record.status == "queued":
        gateway: Gateway = request.app.state.gateway
        _, pending = await gateway.client.queue()
        if record.prompt_id in pending:
            position = pending.index(record.prompt_id)
    return JobState(
        id=record.id,
        status=record.status,
        progress=Progress(**record.progress),
        queue_position=position,
        error=record.error,
        result=record.result,
    )


@router.get(
    "/prompt/{id}/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"},
        204: {"description": "The job has ended and the client has its every event already"},
        400: {"model": ErrorResponse, "description": "A Last-Event-ID this stream never sent"},
        404: {"model": ErrorResponse, "description": "Unknown here, or no longer kept"},
    },
)
async def job_events(
    id: str,
    request: Request,
    last_event_id: str | None = Header(
        None, alias="Last-Event-ID", description="Resume after this event id"
    ),
) -> Response:
    """A job's events as Server-Sent Events: `queued`, `running`, `executing`, `progress`, then
    `complete` (the 200 body) or `failed`. Reconnect with `Last-Event-ID` to get what you missed.

    The stream of a finished job ends once it has sent what the client lacks; a client that
    already has the last event gets 204, which tells a browser's EventSource to stop
    reconnecting.
    """
    record = job_record(request, id)
    after = resume_point(last_event_id, record)
    if record.finished and after >= record.last_event_id:
        return Response(status_code=204, headers={"Cache-Control": "no-cache"})
    return event_stream(record, after=after)


def resume_point(header: str | None, record: JobRecord) -> int:
    """The event id a client resumes after, from its Last-Event-ID header (none: 0)."""
    if header is None or not header.strip():
        return 0
    value = header.strip()
    if not value.isdigit():
        raise InvalidRequest(
            f"Last-Event-ID must be the id of an event of this stream (a whole number), "
            f"not {value[:40]!r}",
            location="Last-Event-ID",
        )
    after = int(value)
    if after > record.last_event_id and not record.finished:
        raise InvalidRequest(
            f"Last-Event-ID {after} is past this job's last event ({record.last_event_id})",
            location="Last-Event-ID",
        )
    return after


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


@router.post(
    "/interrupt",
    response_model=InterruptResponse,
    responses={404: {"model": ErrorResponse, "description": "No queued or running job has it"}},
)
async def interrupt(body: InterruptRequest, request: Request) -> InterruptResponse:
    """Cancel a queued or running job; its own request answers 409 with code `interrupted`."""
    gateway: Gateway = request.app.state.gateway
    await gateway.jobs.interrupt(body.id)
    return InterruptResponse(id=body.id, interrupted=True)
