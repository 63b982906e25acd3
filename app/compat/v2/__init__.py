"""The Comfy API v2 (Comfy Cloud's contract) under /api/v2, as comfy-api-proxy 0.1.6 serves it
in front of a self-hosted ComfyUI: jobs (submit, list, get, workflow, cancel, Server-Sent
Events), assets (multipart upload, by hash, content with Range, delete) and health, with the
proxy's routes, bodies, status codes and error envelope. The implementation is the gateway's:
a v2 job is a gateway job (keys, metrics, MAX_QUEUE_DEPTH, PROMPT_TIMEOUT_S, system webhooks).
Where it differs from the proxy on purpose, docs/compatibility.md says why.
"""

from __future__ import annotations

from fastapi import FastAPI

from app.compat.v2 import asset_routes, envelope, job_routes
from app.compat.v2.state import V2State
from app.edge.errors import add_error_style

# Open without an API key, as the proxy leaves it open without its token: a probe.
OPEN_PATHS = frozenset({f"{envelope.PREFIX}/health"})


def install(app: FastAPI) -> None:
    app.state.v2 = V2State()
    add_error_style(app, f"{envelope.PREFIX}/", envelope.render)
    app.include_router(job_routes.router)
    app.include_router(asset_routes.router)
