"""POST /prompt (run any graph) and POST /interrupt."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.gateway import Gateway
from app.jobs import Graph
from app.schemas import (
    ErrorResponse,
    InterruptRequest,
    InterruptResponse,
    JobOptions,
    PromptRequest,
    PromptResponse,
    WorkflowResponse,
)

router = APIRouter(tags=["prompts"])

ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorResponse, "description": "Invalid body, or ComfyUI refused the graph"},
    409: {"model": ErrorResponse, "description": "Interrupted, or the id is already running"},
    413: {"model": ErrorResponse, "description": "Body over MAX_BODY_SIZE_MB"},
    429: {"model": ErrorResponse, "description": "Queue full (MAX_QUEUE_DEPTH); see Retry-After"},
    502: {"model": ErrorResponse, "description": "A node failed while executing"},
    503: {"model": ErrorResponse, "description": "ComfyUI is down or restarting; see Retry-After"},
    504: {"model": ErrorResponse, "description": "The job ran past PROMPT_TIMEOUT_S"},
}


async def run_job(
    request: Request,
    options: JobOptions,
    graph: Graph,
    echo_input: dict[str, Any] | None = None,
) -> Response:
    """Run one job for any route that takes one (/prompt, the workflow endpoints)."""
    gateway: Gateway = request.app.state.gateway
    gateway.check_accepting()
    result: PromptResponse = await gateway.jobs.run(options.id or str(uuid.uuid4()), graph)
    if echo_input is not None:
        result = WorkflowResponse(**dict(result), input=echo_input)
    return Response(result.model_dump_json(), media_type="application/json")


@router.post("/prompt", response_model=PromptResponse, responses=ERRORS)
async def run_prompt(body: PromptRequest, request: Request) -> Response:
    """Run a ComfyUI API-format graph and answer with every output file, base64-encoded."""
    return await run_job(request, body, body.graph())


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
