"""POST /prompt (run any graph), GET /prompt/{id} (its state), its events, POST /interrupt."""

from __future__ import annotations

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response, StreamingResponse

from app.core.errors import InvalidRequest
from app.core.numbers import whole_number
from app.core.schemas import (
    ErrorResponse,
    InterruptRequest,
    InterruptResponse,
    JobState,
    Progress,
    PromptRequest,
    PromptResponse,
)
from app.core.status import STATUSES, JobProgress, JobStatus
from app.core.streamed_json import StreamedJson
from app.fleet.results import check_available
from app.jobs.records import JobView
from app.routes.convert_warnings import name_ignored_options
from app.routes.deps import CallerDep, GatewayDep, ResultCacheDep
from app.routes.json_body import StrictJsonRoute
from app.routes.respond import ERRORS, CacheAsk, event_stream, run_job

router = APIRouter(tags=["prompts"], route_class=StrictJsonRoute)

# The gateway's job statuses (app.core.status) in /prompt's words: the gateway's own.
STATUS: dict[str, JobStatus] = {status: status for status in STATUSES}


@router.post("/prompt", response_model=PromptResponse, responses=ERRORS)
async def run_prompt(
    body: PromptRequest,
    request: Request,
    gateway: GatewayDep,
    caller: CallerDep,
    results: ResultCacheDep,
) -> Response:
    """Run a ComfyUI API-format graph and answer with every output file, base64-encoded.

    With `Accept: text/event-stream` the answer is the job's event stream instead (as
    `GET /prompt/{id}/events`), ending with `complete` (the 200 body) or `failed`.
    With `"cache": true` an identical request answered before is answered from the result
    cache, without a job; the `Cache-Status` header says `hit`, `fwd=miss` or `fwd=bypass`.
    `convert_output` options that cannot be honoured are named in `X-Convert-Output-Ignored`.
    """
    cache = CacheAsk(results, external_ok=body.cache_external_inputs) if body.cache else None
    response = await run_job(request, gateway, caller, body, body.graph(), cache=cache)
    return name_ignored_options(response, body)


OWNER = Query(
    None,
    description="Admin keys: the key (its name) whose job it is, when several keys have used "
    "the id; ignored for other keys, which see only their own jobs",
)
NOT_KNOWN = {
    "model": ErrorResponse,
    "description": "Unknown here, no longer kept, or another API key's",
}


@router.get("/prompt/{id}", response_model=JobState, responses={404: NOT_KNOWN})
async def job_state(
    id: str, gateway: GatewayDep, caller: CallerDep, owner: str | None = OWNER
) -> Response:
    """The state of a job this gateway process ran: status, progress, and its result or error.
    Each API key sees only its own jobs (another key's id is a 404); admin keys see all."""
    record = await gateway.door.job(id, caller, owner)
    if record.outcome is not None:  # a fleet's files: still with the gateway that ran it?
        await check_available(record.outcome)
    position = await gateway.door.queue_position(record)
    progress = JobProgress.of(record.progress)
    state = JobState(
        id=record.id,
        status=STATUS[record.status],
        progress=Progress(value=int(progress.step), max=int(progress.max), node=progress.node),
        queue_position=position,
        instance=record.instance,
        error=record.error,
        result=None,
        owner=record.owner if caller.admin else None,
    ).model_dump(mode="json")
    state["result"] = record.result  # its files' base64 streamed, never whole in memory
    body = StreamedJson.of(state)
    headers = {"Content-Length": str(body.size)}
    return StreamingResponse(body.chunks(), media_type="application/json", headers=headers)


@router.get(
    "/prompt/{id}/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"},
        204: {"description": "The job has ended and the client has its every event already"},
        400: {"model": ErrorResponse, "description": "A Last-Event-ID this stream never sent"},
        404: NOT_KNOWN,
    },
)
async def job_events(
    id: str,
    gateway: GatewayDep,
    caller: CallerDep,
    last_event_id: str | None = Header(
        None, alias="Last-Event-ID", description="Resume after this event id"
    ),
    owner: str | None = OWNER,
) -> Response:
    """A job's events as Server-Sent Events: `queued`, `running`, `executing`, `progress`, then
    `complete` (the 200 body) or `failed`. Reconnect with `Last-Event-ID` to get what you missed.

    The stream of a finished job ends once it has sent what the client lacks; a client that
    already has the last event gets 204, which tells a browser's EventSource to stop
    reconnecting.
    """
    record = await gateway.door.job(id, caller, owner)
    after = resume_point(last_event_id, record)
    if record.finished and after >= record.last_event_id:
        return Response(status_code=204, headers={"Cache-Control": "no-cache"})
    if record.outcome is not None:  # a fleet's files: still with the gateway that ran it?
        await check_available(record.outcome)
    return event_stream(record, after=after)


def resume_point(header: str | None, record: JobView) -> int:
    """The event id a client resumes after, from its Last-Event-ID header (none: 0)."""
    if header is None or not header.strip():
        return 0
    value = header.strip()
    after = whole_number(value)  # ASCII digits: `²` passes isdigit() and fails int()
    if after is None:
        raise InvalidRequest(
            f"Last-Event-ID must be the id of an event of this stream (a whole number), "
            f"not {value[:40]!r}",
            location="Last-Event-ID",
        )
    if after > record.last_event_id and not record.finished:
        raise InvalidRequest(
            f"Last-Event-ID {after} is past this job's last event ({record.last_event_id})",
            location="Last-Event-ID",
        )
    return after


@router.post(
    "/interrupt",
    response_model=InterruptResponse,
    responses={
        404: {
            "model": ErrorResponse,
            "description": "No queued or running job of this API key has it",
        }
    },
)
async def interrupt(
    body: InterruptRequest, gateway: GatewayDep, caller: CallerDep
) -> InterruptResponse:
    """Cancel a queued or running job; its own request answers 409 with code `interrupted`.
    Each API key may cancel only its own jobs; admin keys any."""
    await gateway.door.interrupt(body.id, caller, body.owner)
    return InterruptResponse(id=body.id, interrupted=True)
