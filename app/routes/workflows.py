"""GET /workflows (what is there, what is available) and one POST route per workflow module.

The POST routes are mounted at start-up, once ComfyUI answers: their request schemas carry the
enums (checkpoints, samplers, ...) of that ComfyUI, so they cannot exist before it does.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, create_model
from starlette.routing import BaseRoute

from app.core.options import JobOptions
from app.core.schemas import ErrorResponse, WorkflowResponse
from app.registry.load import Registry, Workflow
from app.registry.schema import schema_prefix
from app.routes.convert_warnings import name_ignored_options
from app.routes.deps import CallerDep, GatewayDep, RegistryDep
from app.routes.respond import ERRORS, run_job

log = logging.getLogger(__name__)

router = APIRouter(tags=["workflows"])

WORKFLOW_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    500: {"model": ErrorResponse, "description": "The workflow module failed (a bug in it)"},
    503: {
        "model": ErrorResponse,
        "description": "ComfyUI is down or restarting (Retry-After), or this workflow needs "
        "nodes or models this server lacks (`details.reasons`; see `GET /workflows`)",
    },
}


class WorkflowInfo(BaseModel):
    name: str = Field(description="The workflow's name, e.g. `sd15/txt2img`")
    route: str = Field(description="Its endpoint, e.g. `/workflows/sd15/txt2img`")
    summary: str = Field(description="What it does")
    available: bool = Field(description="Whether this server has every node and model it needs")
    reasons: list[str] = Field(description="Why it is not available; empty when it is")


class WorkflowList(BaseModel):
    workflows: list[WorkflowInfo] = Field(description="Every workflow module, by name")


@router.get("/workflows", response_model=WorkflowList)
async def list_workflows(registry: RegistryDep) -> WorkflowList:
    """Every workflow endpoint, whether it can run on this server, and if not, why not."""
    return WorkflowList(
        workflows=[
            WorkflowInfo(
                name=w.name,
                route=w.route,
                summary=w.summary,
                available=w.available,
                reasons=w.reasons if w.reasons is not None else ["not checked yet: starting"],
            )
            for w in registry.workflows
        ]
    )


def mount(app: FastAPI, registry: Registry) -> None:
    """Add each workflow's POST route (and its `/workflow/` alias); replace earlier ones."""
    earlier: list[BaseRoute] = getattr(app.state, "workflow_routes", [])
    app.router.routes[:] = [r for r in app.router.routes if r not in earlier]
    count = len(app.router.routes)
    for workflow in registry.workflows:
        handler = endpoint(workflow)
        for prefix, documented in (("/workflows/", True), ("/workflow/", False)):
            app.router.add_api_route(
                prefix + workflow.name,
                handler,
                methods=["POST"],
                response_model=WorkflowResponse,
                responses=WORKFLOW_ERRORS,
                summary=workflow.summary,
                description=describe(workflow),
                tags=["workflows"],
                include_in_schema=documented,
            )
    app.state.workflow_routes = app.router.routes[count:]
    app.openapi_schema = None  # rebuilt with the new routes on the next /openapi.json


def describe(workflow: Workflow) -> str:
    text = workflow.description
    if workflow.reasons:
        missing = "\n".join(f"- {reason}" for reason in workflow.reasons)
        text += f"\n\n**Not available on this server** (answers 503):\n\n{missing}"
    return text.strip()


def body_model(workflow: Workflow) -> type[JobOptions]:
    """`{"input": {...}}` plus the job options every job route takes."""
    assert workflow.input_model is not None
    model: type[JobOptions] = create_model(
        f"{schema_prefix(workflow.name)}Request",
        __base__=JobOptions,
        __doc__=f"Run the workflow {workflow.name}: {workflow.summary}",
        __cls_kwargs__={"json_schema_extra": {"examples": [{"input": workflow.example}]}},
        input=(workflow.input_model, Field(description="The workflow's input")),
    )
    return model


def endpoint(workflow: Workflow) -> Any:
    model = body_model(workflow)

    async def run_workflow(
        body: Any, request: Request, gateway: GatewayDep, caller: CallerDep
    ) -> Response:
        data: BaseModel = body.input
        graph = workflow.graph(data)
        echo_input = data.model_dump(mode="json")
        response = await run_job(
            request, gateway, caller, body, graph, echo_input=echo_input, workflow=workflow.name
        )
        return name_ignored_options(response, body)

    # FastAPI reads the body's model from the annotation, which differs per workflow.
    run_workflow.__annotations__ = {
        "body": model,
        "request": Request,
        "gateway": GatewayDep,
        "caller": CallerDep,
        "return": Response,
    }
    run_workflow.__doc__ = workflow.summary
    return run_workflow
