"""Kubernetes/SaladCloud probes: /health (liveness) and /ready (readiness)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.core.schemas import HealthResponse, ReadyResponse
from app.routes.deps import CustomNodesDep, GatewayDep

router = APIRouter(tags=["probes"])


@router.get(
    "/health",
    response_model=HealthResponse,
    responses={503: {"description": "Start-up has not completed"}},
)
async def health(gateway: GatewayDep, custom_nodes: CustomNodesDep) -> JSONResponse:
    """200 once start-up has completed; stays 200 while ComfyUI is being restarted. `instances`
    says what each ComfyUI instance of the pool is doing; `custom_nodes` what the manifest
    installed."""
    body = {
        "version": gateway.version,
        "comfyui_version": gateway.comfy.version,
        "instances": gateway.instances(),
        "custom_nodes": [node.model_dump() for node in custom_nodes],
    }
    if not gateway.lifecycle.started:
        return JSONResponse({"status": "starting", **body}, status_code=503)
    return JSONResponse(HealthResponse(status="healthy", **body).model_dump())


@router.get(
    "/ready",
    response_model=ReadyResponse,
    responses={503: {"model": ReadyResponse, "description": "Keep traffic away for now"}},
)
async def ready(gateway: GatewayDep) -> JSONResponse:
    """200 when ComfyUI answers, its event stream is connected and the queue has room."""
    reason = gateway.readiness.not_ready_reason()
    body = ReadyResponse(
        status="not ready" if reason else "ready",
        reason=reason,
        queue_depth=gateway.readiness.queue_depth,
    )
    return JSONResponse(body.model_dump(exclude_none=True), status_code=503 if reason else 200)
