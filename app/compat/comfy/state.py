"""The passthrough's setting and memory, held by app.state: whose each prompt id and client id
is, and what each key may /view."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from app.compat.comfy.owners import ClientIds, SubmittedPrompts
from app.compat.comfy.reads import ViewableFiles
from app.core.settings import PassthroughMode


@dataclass
class Passthrough:
    """The passthrough's setting and memory, held by app.state."""

    mode: PassthroughMode
    submitted: SubmittedPrompts  # whose each prompt id is
    clients: ClientIds  # whose each websocket clientId is
    files: ViewableFiles  # what each key may /view


async def get_passthrough(connection: HTTPConnection) -> Passthrough:
    passthrough: Passthrough = connection.app.state.passthrough
    return passthrough


PassthroughDep = Annotated[Passthrough, Depends(get_passthrough)]
