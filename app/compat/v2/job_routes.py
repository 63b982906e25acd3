"""/api/v2/jobs: submit, list, get, workflow, cancel, events (comfy-api-proxy 0.1.6's contract).

A v2 job is a gateway job (request id = the v2 job id, a UUID): it passes MAX_QUEUE_DEPTH and
its key's KEY_LIMITS, runs under PROMPT_TIMEOUT_S, counts in the metrics as workflow `api/v2`,
and its ComfyUI events reach SYSTEM_WEBHOOK_URL like any other. It is its API key's: another
key's job is a 404 and is not listed (an admin key's list holds every key's jobs).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.compat.v2 import envelope, events, submission
from app.compat.v2.envelope import V2JSON, base_url, error, get_and_head, now
from app.compat.v2.jobs import LISTED, TERMINAL, job_body, output_file, status_of
from app.compat.v2.state import MAX_KEY_LENGTH, V2Job, V2State, V2StateDep
from app.core import strict_json
from app.core.errors import (
    ComfyFailed,
    ComfyUnavailable,
    GatewayError,
    InputError,
    InvalidRequest,
    NotFound,
    QueueFull,
)
from app.core.keys import Caller
from app.core.numbers import whole_number
from app.core.outcome import ResultFile
from app.gateway import Gateway
from app.jobs.records import JobView
from app.routes.deps import CallerDep, GatewayDep, InputCapsDep

router = APIRouter(prefix=envelope.PREFIX, tags=["Comfy API v2"])

LIST_LIMIT, LIST_DEFAULT, LIST_SCAN = 100, 50, 500
CANCEL_WAIT_S = 2.0  # how long a cancel waits for the job to end before answering `canceling`


async def record_of(gateway: Gateway, job: V2Job, caller: Caller) -> JobView | None:
    try:
        return await gateway.door.job(job.id, caller, job.owner)
    except NotFound:
        return None


def known_job(state: V2State, job_id: str, caller: Caller) -> V2Job | None:
    """The v2 job with this id (any UUID spelling) if the caller may see it, or None."""
    try:
        canonical = str(uuid.UUID(job_id))
    except ValueError:
        return None
    job = state.jobs.get(canonical)
    return job if job is not None and caller.sees(job.owner) else None


def no_job(job_id: str) -> Response:
    return error(404, "not_found", f"No job {job_id}.")


async def position(gateway: Gateway, record: JobView | None) -> int | None:
    """1-based place in ComfyUI's queue while queued; None when unknown (ComfyUI down too)."""
    if record is None or record.status != "queued":
        return None
    try:
        ahead = await gateway.door.queue_position(record)
    except GatewayError:
        return None
    return ahead + 1 if ahead is not None else None


async def body_of(
    gateway: Gateway, caller: Caller, base: str, job: V2Job, status: str | None = None
) -> dict[str, Any]:
    """The Job as the proxy answers it (`base`: the gateway's URL, for its links)."""
    record = await record_of(gateway, job, caller)
    place = await position(gateway, record)
    return job_body(job, record, base, status=status, queue_position=place)


@get_and_head(router, "/health")
async def health(gateway: GatewayDep) -> Response:
    """Always 200 once the gateway serves (as the proxy, it does not ask ComfyUI)."""
    return V2JSON({"status": "healthy", "upstream": gateway.settings.comfy_url})


@router.post("/jobs", status_code=201, response_class=V2JSON)
async def submit(
    request: Request, gateway: GatewayDep, state: V2StateDep, caller: CallerDep, caps: InputCapsDep
) -> Response:
    """Submit `{"workflow": <API-format graph>, "metadata"?, "priority"?, "extra_data"?}`;
    `core/ASSET` references resolve to uploaded assets or earlier outputs. 201 with the Job."""
    body = await strict_json.read(await request.body())  # not JSON: a located 400
    if not isinstance(body, dict):  # the proxy answers a text/plain 500
        return error(400, "invalid_request", "Body must be a JSON object.")
    workflow = body.get("workflow")
    for problem in (
        submission.reserved(body),
        submission.workflow_problem(workflow),
        submission.extras_problem(body),
        submission.extra_data_problem(body),
    ):
        if problem is not None:
            return error(*problem)
    missing: list[str] = []
    # Outputs of earlier jobs are read first (in a fleet, from Redis); resolving is then sync.
    outputs = {
        i: await output_of(gateway, state, caller, i) for i in submission.reference_ids(workflow)
    }
    try:  # an output becomes an input (its base64 in the graph): first held to the input caps
        for output_id, found in outputs.items():
            if found is not None:
                caps.check_bytes(found.size, f"workflow.{output_id}")
    except InputError as e:
        return error(422, "invalid_workflow", e.message, {"location": e.location})
    for found in outputs.values():  # a fleet's file is fetched off the loop, before resolving
        if found is not None and found.remote is not None:
            await asyncio.to_thread(getattr, found, "content")
    resolved = submission.resolve(workflow, state.assets, caller, outputs.get, missing)
    if missing:
        message = f"Unresolvable core/ASSET reference(s): {', '.join(missing)}"
        return error(422, "missing_asset", message, {"missing_ids": missing})
    job_id = str(uuid.uuid4())
    key = request.headers.get("idempotency-key")
    if key is not None:
        if not key or len(key) > MAX_KEY_LENGTH:
            message = f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} characters."
            return error(400, "invalid_request", message)
        if not state.claim(key, caller.id):
            return error(
                422,
                "idempotency_key_reuse",
                "This Idempotency-Key has already been used. Keys are single-use; poll or list "
                "your jobs instead of resubmitting with the same key.",
            )
    try:
        job = await gateway.door.start_job(
            job_id, resolved, submission.job_options(body), caller=caller, workflow="api/v2"
        )
    except ComfyUnavailable:
        # The outcome is unknown (ComfyUI may hold the prompt): the key stays claimed.
        return error(503, "upstream_unreachable", "Could not reach ComfyUI to submit the job.")
    except (InvalidRequest, ComfyFailed) as e:  # ComfyUI (or the gateway) refused the graph
        state.release(key, caller.id)
        details: dict[str, Any] = {"node_errors": (e.details or {}).get("node_errors", {})}
        if e.location is not None:
            details["location"] = e.location
        return error(422, "invalid_workflow", e.message, details)
    except (QueueFull, GatewayError):
        state.release(key, caller.id)
        raise
    v2_job = V2Job(
        job_id,
        resolved,
        now(),
        metadata=body.get("metadata"),
        priority=body.get("priority"),
        owner=caller.id,
    )
    state.add(v2_job, job.record)
    # As the proxy: the 201 is the job as just queued, whatever ComfyUI does meanwhile.
    queued = job_body(v2_job, None, base_url(request), status="queued")
    return V2JSON(queued, status_code=201)


async def output_of(
    gateway: Gateway, state: V2State, caller: Caller, output_id: str
) -> ResultFile | None:
    """A v2 job's output by its id, while the gateway keeps its outcome."""
    found = submission.output_id_parts(output_id)
    job = known_job(state, found[0], caller) if found is not None else None
    if found is None or job is None:
        return None
    return output_file(await record_of(gateway, job, caller), found[1])


@get_and_head(router, "/jobs")
async def list_jobs(
    request: Request, gateway: GatewayDep, state: V2StateDep, caller: CallerDep
) -> Response:
    """The v2 jobs of this process, newest first: `?limit=` (1-100), `?status=a,b`."""
    limit = whole_number(request.query_params.get("limit", str(LIST_DEFAULT)))
    if limit is None:
        return error(400, "invalid_request", "'limit' must be an integer.")
    if not 1 <= limit <= LIST_LIMIT:
        return error(400, "invalid_request", f"'limit' must be between 1 and {LIST_LIMIT}.")
    wanted: set[str] | None = None
    if status := request.query_params.get("status"):
        wanted = {s.strip() for s in status.split(",") if s.strip()}
        if bad := wanted - LISTED:
            message = f"Unknown status filter value(s): {', '.join(sorted(bad))}."
            return error(400, "invalid_request", message)
    jobs: list[dict[str, Any]] = []
    scanned = 0
    mine = (job for job in state.jobs.values() if caller.sees(job.owner))
    newest_first = sorted(mine, key=lambda j: j.created_at, reverse=True)
    for job in newest_first:
        if len(jobs) >= limit or scanned >= LIST_SCAN:
            break
        scanned += 1
        body = await body_of(gateway, caller, base_url(request), job)
        if wanted is None or body["status"] in wanted:
            jobs.append(body)
    truncated = len(jobs) < limit and scanned < len(newest_first)
    return V2JSON({"jobs": jobs, "truncated": truncated})


@get_and_head(router, "/jobs/{job_id}")
async def get_job(
    job_id: str, request: Request, gateway: GatewayDep, state: V2StateDep, caller: CallerDep
) -> Response:
    """A job: its status, queue position, progress, outputs or error."""
    job = known_job(state, job_id, caller)
    if job is None:
        return no_job(job_id)
    return V2JSON(await body_of(gateway, caller, base_url(request), job))


@get_and_head(router, "/jobs/{job_id}/workflow")
async def get_workflow(job_id: str, state: V2StateDep, caller: CallerDep) -> Response:
    """The graph the job ran, asset references resolved: `{"workflow", "format": "api"}`."""
    try:
        uuid.UUID(job_id)
    except ValueError:
        return no_job(job_id)
    job = known_job(state, job_id, caller)
    if job is None:
        return error(404, "not_found", f"No recoverable workflow for job {job_id}.")
    return V2JSON({"workflow": job.workflow, "format": "api"})


@router.post("/jobs/{job_id}/cancel", response_class=V2JSON)
async def cancel(
    job_id: str, request: Request, gateway: GatewayDep, state: V2StateDep, caller: CallerDep
) -> Response:
    """Cancel a queued or running job: `canceled` once it has stopped, `canceling` until."""
    job = known_job(state, job_id, caller)
    if job is None:
        return no_job(job_id)
    record = await record_of(gateway, job, caller)
    base = base_url(request)
    if record is None or record.finished:
        return V2JSON(await body_of(gateway, caller, base, job))
    try:
        await gateway.door.interrupt(job.id, caller, job.owner)
    except NotFound:
        pass  # it ended meanwhile
    except ComfyUnavailable:
        return error(503, "upstream_unreachable", "Could not reach ComfyUI to cancel.")
    await ended(record, CANCEL_WAIT_S)
    status = status_of(record)
    canceling = "canceling" if status not in TERMINAL else None
    return V2JSON(await body_of(gateway, caller, base, job, canceling))


async def ended(record: JobView, timeout_s: float) -> None:
    """Wait until the job has ended, at most timeout_s."""

    async def last_event() -> None:
        async for _ in record.follow(record.last_event_id):
            pass

    if not record.finished:
        try:
            await asyncio.wait_for(last_event(), timeout_s)
        except TimeoutError:
            return


@router.get("/jobs/{job_id}/events", response_class=Response)
async def job_events(
    job_id: str, request: Request, gateway: GatewayDep, state: V2StateDep, caller: CallerDep
) -> Response:
    """The job's Server-Sent Events: `status`, `progress`, `output`; ends when the job does."""
    job = known_job(state, job_id, caller)
    if job is None:
        return no_job(job_id)
    record = await record_of(gateway, job, caller)
    return events.stream(job, record, base_url(request), await position(gateway, record))
