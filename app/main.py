"""create_app(settings): the FastAPI app, whose lifespan starts and stops the Gateway."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app import __version__
from app.comfy.process import ComfyStartError
from app.compat import v2 as api_v2
from app.compat.a1111 import routes as sdapi
from app.compat.a1111.state import SdapiStates
from app.compat.comfy import proxy as comfy_proxy
from app.compat.v1 import routes as api_v1
from app.console import routes as console
from app.core.settings import PassthroughMode, Settings
from app.edge.api_keys import ApiKeys
from app.edge.auth import OPEN_PATHS, ApiKeyAuth, document_api_keys
from app.edge.body_limit import BodySizeLimit
from app.edge.cors import add_cors
from app.edge.errors import install_handlers
from app.edge.request_metrics import RequestMetrics
from app.gateway import Gateway
from app.install import install
from app.jobs.result_cache import ResultCache
from app.registry.load import Registry
from app.routes import docs, download, fleet_files, metrics, models, probes, prompt, workflows
from app.routes.json_body import StrictJsonRoute
from app.startup import activate, fetch_models, run_warmup

log = logging.getLogger(__name__)

DESCRIPTION = """
Run any ComfyUI graph over plain HTTP and get the outputs back in the response.

* `POST /prompt` takes a graph in ComfyUI's API format and answers with every output file,
  base64-encoded.
* `POST /workflows/...` run the workflow modules: a small typed input instead of a graph;
  `GET /workflows` lists them and says which can run on this server.
* `GET /health` and `GET /ready` are liveness and readiness probes.
* Every error has the same shape: `{"error", "code", "location"?, "details"?}`.
"""


def create_app(settings: Settings) -> FastAPI:
    """The app; raises WorkflowLoadError (a SettingsError) naming a broken workflow module."""
    registry = Registry.load(settings.workflow_dir)
    gateway = Gateway(settings)

    async def start_or_exit() -> None:
        try:
            # comfyui-api's manifest: packages and custom nodes before ComfyUI starts
            app.state.custom_nodes = await asyncio.to_thread(install, settings)
            await gateway.lifecycle.start()
        except ComfyStartError as e:
            # One clear line instead of a framework traceback, then a prompt non-zero exit.
            log.critical("cannot start: %s", e)
            gateway.lifecycle.exit_code = 1
            gateway.lifecycle.request_exit()
        except Exception:
            log.exception("start-up failed")
            gateway.lifecycle.exit_code = 1
            gateway.lifecycle.request_exit()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Start in the background, so the port opens at once and /health and /ready answer 503
        # ("starting") while ComfyUI loads, as probes expect, instead of refusing connections.
        starting = asyncio.create_task(start_or_exit(), name="gateway-start")
        try:
            yield
        finally:
            if not starting.done():
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starting
            await gateway.lifecycle.stop()

    app = FastAPI(
        title="comfy-gateway",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by routes.docs without a CDN
        redoc_url=None,
    )
    app.router.route_class = StrictJsonRoute  # the workflow routes, mounted at start-up
    app.state.gateway = gateway
    app.state.registry = registry
    app.state.sdapi = SdapiStates()  # AUTOMATIC1111's /options: per API key, in this process
    app.state.result_cache = result_cache(settings, gateway)
    # Workflow routes need ComfyUI's enums, so they are mounted once it answers; the manifest's
    # models come before the warmup, which may load one of them.
    gateway.lifecycle.on_start.append(lambda: fetch_models(gateway))
    gateway.lifecycle.on_start.append(lambda: run_warmup(gateway))
    gateway.lifecycle.on_start.append(lambda: activate(app))
    install_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_size_bytes)
    # Middleware added later wraps what came before: CORS, then metrics, then the key check.
    keys = ApiKeys.from_settings(settings)
    if keys is not None:
        app.add_middleware(
            ApiKeyAuth,
            keys=keys,
            open_paths=OPEN_PATHS | api_v2.OPEN_PATHS | console.OPEN_PATHS,
            limits=settings.key_limits,
            metrics=gateway.metrics,
            shared=gateway.backend.shared_rates,
        )
        gateway.metrics.keys.watch(gateway.door.active_by_key, keys.names())
    app.add_middleware(RequestMetrics, metrics=gateway.metrics)  # 401s and 413s count too
    add_cors(app, settings.cors_allow_origins)
    log_edge(settings, keys)
    for module in (probes, prompt, models, download, workflows, metrics, sdapi, fleet_files):
        app.include_router(module.router)
    api_v1.install(app)
    api_v2.install(app)
    if settings.comfy_passthrough is not PassthroughMode.OFF:
        comfy_proxy.install(app, settings.comfy_passthrough)
    docs.install(app)
    console.install(app, settings, gateway)
    app.openapi = lambda: openapi_without_422(app, keys is not None)  # type: ignore[method-assign]
    return app


def result_cache(settings: Settings, gateway: Gateway) -> ResultCache | None:
    """The result cache, when RESULT_CACHE_MAX_MB turns it on."""
    if not settings.result_cache_max_bytes:
        return None
    cache = ResultCache(settings.result_cache_max_bytes)
    cache.metrics = gateway.metrics
    log.info("result cache: up to %g MB", settings.result_cache_max_mb)
    return cache


def log_edge(settings: Settings, keys: ApiKeys | None) -> None:
    if keys is None:
        log.info("API_KEYS is not set: every endpoint is open to whoever can reach the gateway")
    else:
        log.info(
            "API keys required: %d key(s) accepted (%d admin), each sees only its own jobs",
            len(keys), len(settings.admin_api_keys),
        )  # fmt: skip
        if settings.key_limits:
            log.info("KEY_LIMITS: %s", ", ".join(sorted(settings.key_limits)))
        if settings.comfy_passthrough is PassthroughMode.FULL:
            log.warning(
                "COMFY_PASSTHROUGH=full forwards every ComfyUI endpoint to every key: keys can "
                "read and cancel each other's passthrough prompts (admin keys reach them anyway)"
            )
    if settings.cors_allow_origins:
        log.info("CORS: browsers may call from %s", ", ".join(settings.cors_allow_origins))


def openapi_without_422(app: FastAPI, api_keys: bool = False) -> dict[str, Any]:
    """FastAPI documents validation failures as 422; this API answers them with 400.

    With API keys, the document declares them so that Swagger UI offers Authorize.
    """
    if app.openapi_schema is None:
        spec = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        for path in spec["paths"].values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        for unused in ("HTTPValidationError", "ValidationError"):
            spec.get("components", {}).get("schemas", {}).pop(unused, None)
        if api_keys:
            document_api_keys(spec, OPEN_PATHS | api_v2.OPEN_PATHS)
        app.openapi_schema = spec
    return app.openapi_schema
