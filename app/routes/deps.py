"""What a handler needs, declared by type: FastAPI dependencies for the gateway's services.

    @router.get("/prompt/{id}")
    async def job_state(id: str, gateway: GatewayDep, caller: CallerDep) -> JobState: ...

Each reads what create_app put on app.state (the services) or what the API-key middleware left
in the scope (the caller), so that no handler reaches into app.state by hand. A facade's own
memory has its dependency beside it (app.compat.v2.state.V2StateDep, ...). The functions are
coroutines: FastAPI runs a plain function dependency in a worker thread, which costs a hop on
every request for nothing here.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from app.core.keys import Caller, caller_of
from app.core.schemas import CustomNode
from app.core.settings import Settings
from app.gateway import Gateway
from app.jobs.result_cache import ResultCache
from app.media.caps import InputCaps
from app.registry.load import Registry


async def get_gateway(connection: HTTPConnection) -> Gateway:
    """The gateway (its door for jobs, its ComfyUI, its models)."""
    gateway: Gateway = connection.app.state.gateway
    return gateway


async def get_caller(connection: HTTPConnection) -> Caller:
    """Who makes the request: its API key (ANONYMOUS without keys)."""
    return caller_of(connection.scope)


async def get_settings(gateway: Annotated[Gateway, Depends(get_gateway)]) -> Settings:
    return gateway.settings


async def get_input_caps(gateway: Annotated[Gateway, Depends(get_gateway)]) -> InputCaps:
    """The caps every input file is held to (INPUT_MAX_MB, MAX_INPUT_PIXELS, ...)."""
    return gateway.inputs.caps


async def get_registry(connection: HTTPConnection) -> Registry:
    """The workflow modules."""
    registry: Registry = connection.app.state.registry
    return registry


async def get_result_cache(connection: HTTPConnection) -> ResultCache | None:
    """The result cache; None unless RESULT_CACHE_MAX_MB turns it on."""
    cache: ResultCache | None = getattr(connection.app.state, "result_cache", None)
    return cache


async def get_custom_nodes(connection: HTTPConnection) -> list[CustomNode]:
    """The custom nodes the manifest installed (app.install), once it has."""
    nodes: list[CustomNode] = getattr(connection.app.state, "custom_nodes", [])
    return nodes


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
CallerDep = Annotated[Caller, Depends(get_caller)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
InputCapsDep = Annotated[InputCaps, Depends(get_input_caps)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
CustomNodesDep = Annotated[list[CustomNode], Depends(get_custom_nodes)]
ResultCacheDep = Annotated[ResultCache | None, Depends(get_result_cache)]
