"""GET /console: the operator page and its two files, its state, and job thumbnails.

The page and its files hold no data, so they are open (OPEN_PATHS: a browser cannot send a key
with a plain page load); its script asks for an admin key once, keeps it in sessionStorage and
sends it as `X-API-Key` with every request for data. With API keys on, the data needs an admin
key: another key gets 403 (the page is open, so a 404 would hide nothing). CONSOLE_ENABLED=false
leaves every /console path a 404.

Every answer forbids framing and inline script (Content-Security-Policy), so that a tenant's
text (a job's error, a file's name: the script shows it as text only) cannot act on the page.
"""

from __future__ import annotations

import html
from pathlib import Path
from string import Template
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Query
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.requests import HTTPConnection, Request

from app.console.state import ConsoleState
from app.console.thumbnails import Thumbnails
from app.core.errors import Forbidden
from app.core.keys import Caller
from app.core.settings import Settings
from app.gateway import Gateway
from app.routes.deps import CallerDep, GatewayDep

STATIC = Path(__file__).parent / "static"
PREFIX = "/console"
OPEN_PATHS = frozenset({PREFIX, f"{PREFIX}/console.js", f"{PREFIX}/console.css"})
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
NO_STORE = {**HEADERS, "Cache-Control": "no-store"}
PAGE = Template((STATIC / "console.html").read_text(encoding="utf-8"))

router = APIRouter(prefix=PREFIX, include_in_schema=False)


class Console:
    """The console's memory: its state reader and its thumbnails."""

    def __init__(self, gateway: Gateway) -> None:
        self.state = ConsoleState(gateway)
        self.thumbnails = Thumbnails()


def install(app: FastAPI, settings: Settings, gateway: Gateway) -> None:
    """Add /console and its routes, unless CONSOLE_ENABLED is off."""
    if settings.console_enabled:
        app.state.console = Console(gateway)
        app.include_router(router)


async def get_console(connection: HTTPConnection) -> Console:
    console: Console = connection.app.state.console
    return console


async def operator(caller: CallerDep) -> Caller:
    """The caller, if it may read the console: an admin key, or anyone while keys are off."""
    if caller.tenant:
        raise Forbidden(
            "the console's data needs an admin key (ADMIN_API_KEYS); this key is not one",
            location="X-API-Key",
        )
    return caller


ConsoleDep = Annotated[Console, Depends(get_console)]
OperatorDep = Annotated[Caller, Depends(operator)]


@router.get("")
async def page(request: Request, gateway: GatewayDep) -> HTMLResponse:
    """The page: a frame the script fills in; it holds no data."""
    root = html.escape(request.scope.get("root_path", ""), quote=True)
    body = PAGE.substitute(root=root, version=html.escape(gateway.version, quote=True))
    return HTMLResponse(body, headers=NO_STORE)


@router.get("/console.js")
async def script() -> FileResponse:
    return FileResponse(STATIC / "console.js", media_type="text/javascript", headers=HEADERS)


@router.get("/console.css")
async def style() -> FileResponse:
    return FileResponse(STATIC / "console.css", media_type="text/css", headers=HEADERS)


@router.get("/state.json")
async def state(console: ConsoleDep, _: OperatorDep) -> JSONResponse:
    """What the page shows: instances, queue, running and finished jobs, models, peers."""
    return JSONResponse(await console.state.read(), headers=NO_STORE)


@router.get("/jobs/{id}/thumbnail")
async def job_thumbnail(
    id: str,
    gateway: GatewayDep,
    console: ConsoleDep,
    caller: OperatorDep,
    owner: str | None = Query(None, description="The key whose job it is"),
) -> Response:
    """A JPEG of the finished job's first image, at most 256 px a side; 404 when it has none."""
    record = await gateway.door.job(id, caller, owner)
    jpeg = await console.thumbnails.of(record.owner, record.id, record.outcome)
    headers = {**HEADERS, "Cache-Control": "private, max-age=300"}
    return Response(jpeg, media_type="image/jpeg", headers=headers)
