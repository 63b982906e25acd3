"""create_app(settings): the FastAPI app, whose lifespan starts and stops the Gateway."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app import __version__
from app.comfy.process import ComfyStartError
from app.errors import install_handlers
from app.gateway import Gateway
from app.middleware import BodySizeLimit
from app.routes import models, probes, prompt
from app.settings import Settings

log = logging.getLogger(__name__)

DESCRIPTION = """
Run any ComfyUI graph over plain HTTP and get the outputs back in the response.

* `POST /prompt` takes a graph in ComfyUI's API format and answers with every output file,
  base64-encoded.
* `GET /health` and `GET /ready` are liveness and readiness probes.
* Every error has the same shape: `{"error", "code", "location"?, "details"?}`.
"""


def create_app(settings: Settings) -> FastAPI:
    gateway = Gateway(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await gateway.start()
        except ComfyStartError as e:
            # One clear line instead of a framework traceback, then a prompt non-zero exit.
            log.critical("cannot start: %s", e)
            gateway.exit_code = 1
            gateway.request_exit()
        try:
            yield
        finally:
            await gateway.stop()

    app = FastAPI(
        title="comfy-gateway",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    install_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_size_bytes)
    for module in (probes, prompt, models):
        app.include_router(module.router)
    app.openapi = lambda: openapi_without_422(app)  # type: ignore[method-assign]
    return app


def openapi_without_422(app: FastAPI) -> dict[str, Any]:
    """FastAPI documents validation failures as 422; this API answers them with 400."""
    if app.openapi_schema is None:
        spec = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        for path in spec["paths"].values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        for unused in ("HTTPValidationError", "ValidationError"):
            spec.get("components", {}).get("schemas", {}).pop(unused, None)
        app.openapi_schema = spec
    return app.openapi_schema
