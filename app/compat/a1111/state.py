"""What /sdapi/v1 remembers per API key (its checkpoint, options, generations in flight), and
what its handlers work with, as FastAPI dependencies (SdapiDep, SdapiStatesDep)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends
from starlette.requests import HTTPConnection

from app.core.keys import Caller
from app.gateway import Gateway
from app.registry.load import Registry
from app.routes.deps import CallerDep, GatewayDep, RegistryDep


@dataclass
class Generation:
    """One A1111 request in flight: how many images, how many done, which job runs now."""

    total: int
    owner: str | None = None  # the id of the API key whose it is
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    job_id: str | None = None
    interrupted: bool = False


@dataclass
class SdapiState:
    """Per API key: the current checkpoint (`/options`) and the generations running, as if each
    key had an A1111 of its own."""

    checkpoint: str | None = None  # None: the workflow's default
    options: dict[str, Any] = field(default_factory=dict)
    running: list[Generation] = field(default_factory=list)


class SdapiStates:
    """Each API key's SdapiState (one while API keys are off), for the process."""

    def __init__(self) -> None:
        self._by_owner: dict[str | None, SdapiState] = {}

    def of(self, caller: Caller) -> SdapiState:
        return self._by_owner.setdefault(caller.id, SdapiState())

    def visible(self, caller: Caller) -> list[SdapiState]:
        """The states whose generations the caller may follow and interrupt (an admin: all)."""
        return list(self._by_owner.values()) if caller.admin else [self.of(caller)]


async def get_states(connection: HTTPConnection) -> SdapiStates:
    states: SdapiStates = connection.app.state.sdapi
    return states


SdapiStatesDep = Annotated[SdapiStates, Depends(get_states)]


@dataclass
class Sdapi:
    """What an /sdapi/v1 handler works with: the gateway, the workflows, the caller and its own
    A1111 state."""

    gateway: Gateway
    registry: Registry
    caller: Caller
    state: SdapiState

    @property
    def family(self) -> str:
        """The workflow family whose txt2img, img2img and inpaint run A1111's requests."""
        return self.gateway.settings.sdapi_workflow_family


async def get_sdapi(
    gateway: GatewayDep, registry: RegistryDep, caller: CallerDep, states: SdapiStatesDep
) -> Sdapi:
    return Sdapi(gateway, registry, caller, states.of(caller))


SdapiDep = Annotated[Sdapi, Depends(get_sdapi)]
