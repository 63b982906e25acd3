"""GET /models: the model files ComfyUI can load, by folder."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.core.schemas import ErrorResponse
from app.gateway import Gateway

router = APIRouter(tags=["models"])


@router.get(
    "/models",
    response_model=dict[str, list[str]],
    responses={503: {"model": ErrorResponse, "description": "ComfyUI is not reachable"}},
)
async def list_models(request: Request) -> dict[str, list[str]]:
    """Every model folder ComfyUI knows (`checkpoints`, `loras`, ...) with its files."""
    gateway: Gateway = request.app.state.gateway
    return await gateway.comfy.models()
