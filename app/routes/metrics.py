"""GET /metrics: the gateway's Prometheus metrics (text format, or OpenMetrics if asked for)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client.exposition import choose_encoder

from app.routes.deps import GatewayDep

router = APIRouter(tags=["probes"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def metrics(request: Request, gateway: GatewayDep) -> Response:
    """Requests by route and status, job durations by workflow, queue depth, ComfyUI up and
    restarts, webhook deliveries, bytes moved, process resources. Open without an API key, for
    scrapers; keep it off the public internet if that matters to you.
    """
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(gateway.metrics.registry), media_type=content_type)
