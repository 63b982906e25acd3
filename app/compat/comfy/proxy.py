"""/comfy/<path>: ComfyUI's own API through the gateway (the websocket: app.compat.comfy.ws).

Existing ComfyUI clients switch to the gateway by changing their base URL and so gain its
supervision, probes, body cap and API keys. With COMFY_PASSTHROUGH=true a request is made ready
by app.compat.comfy.request (its rules: app.compat.comfy.rules): parsed once, checked, and
what goes on rebuilt from what was read; with COMFY_PASSTHROUGH=full, and for an admin key, it
goes on as it came, its body streamed. ComfyUI's answer streams back unchanged (never held
whole), over the passthrough's own connections (app.gateway.comfy), and a client must take each
part of it within PASSTHROUGH_TIMEOUT_S or be cut off, so that its connection to ComfyUI goes
back to the pool. Prompts sent this way are the client's own: nothing rewrites their graphs,
and the gateway's queue depth counts them because it reads ComfyUI's queue from the status
events every socket receives. With API keys, each is its key's: app.compat.comfy.reads
narrows what a key reads to its own prompts and files, they count against its max_jobs
(KEY_LIMITS), and an admin key passes as with COMFY_PASSTHROUGH=full.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Message, Send

from app.compat.comfy import ws
from app.compat.comfy.owners import ClientIds, SubmittedPrompts
from app.compat.comfy.reads import ViewableFiles
from app.compat.comfy.request import as_sent, checked
from app.compat.comfy.state import Passthrough, PassthroughDep
from app.compat.comfy.ws import check_running
from app.core.settings import PassthroughMode
from app.gateway import Gateway
from app.routes.deps import CallerDep, GatewayDep, InputCapsDep

log = logging.getLogger(__name__)

router = APIRouter(tags=["comfyui"])

PREFIX = "/comfy"
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
# RFC 9110 §7.6.1: they describe one connection, not the message, so a proxy never copies them.
HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
        "te", "trailer", "trailers", "transfer-encoding", "upgrade",
    }
)  # fmt: skip
# Not for ComfyUI: the gateway's own keys, the client's Host (httpx sets ComfyUI's), and
# Origin, which ComfyUI compares with its Host and would refuse (403) behind any proxy.
NOT_FORWARDED = HOP_BY_HOP | {"host", "authorization", "x-api-key", "origin"}


def request_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """The client's headers that go on to ComfyUI, repeated ones kept."""
    named = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]
    # Headers the client declared hop-by-hop in `Connection` are dropped too.
    declared = [v for k, v in named if k.lower() == "connection"]
    listed = {token.strip().lower() for value in declared for token in value.split(",")}
    return [(k, v) for k, v in named if k.lower() not in NOT_FORWARDED | listed]


def response_headers(headers: httpx.Headers) -> list[tuple[str, str]]:
    """ComfyUI's response headers that go back to the client, repeated ones kept."""
    return [(k, v) for k, v in headers.multi_items() if k.lower() not in HOP_BY_HOP]


def install(app: FastAPI, mode: PassthroughMode) -> None:
    """Serve the passthrough on `app`, forwarding what `mode` opens."""
    gateway: Gateway = app.state.gateway
    submitted = SubmittedPrompts(foreign=gateway.comfy.is_gateway_prompt)
    clients = ClientIds(foreign=gateway.comfy.is_own_client_id)
    app.state.passthrough = Passthrough(mode, submitted, clients, ViewableFiles())
    app.include_router(router)
    app.include_router(ws.router)


@router.api_route(f"{PREFIX}/{{path:path}}", methods=METHODS, include_in_schema=False)
async def forward(
    path: str,
    request: Request,
    gateway: GatewayDep,
    passthrough: PassthroughDep,
    caller: CallerDep,
    caps: InputCapsDep,
) -> Response:
    """A ComfyUI endpoint: the request goes on (checked, or as it came), the answer as it is."""
    settings = gateway.settings
    headers = request_headers(request.scope["headers"])
    if passthrough.mode is PassthroughMode.SAFE and not caller.admin:  # admin: as `full`
        out = await checked(request, headers, caller, passthrough, gateway, caps)
        if out.answer is not None:
            return out.answer
    else:
        check_running(gateway)
        out = as_sent(request, headers, settings.passthrough_body_timeout_s)
    new_id = out.submission.prompt_id if out.submission and out.submission.claimed else None
    try:
        upstream = await gateway.comfy.forward(request.method, out.target, out.headers, out.content)
    except BaseException:
        if new_id is not None:
            passthrough.submitted.release(new_id)
        raise
    if new_id is not None and upstream.status_code != 200:
        passthrough.submitted.release(new_id)  # ComfyUI queued nothing under it
    return RelayResponse(upstream, out.target, settings.passthrough_timeout_s)


class SlowClient(Exception):
    """The client did not take a part of the answer in time."""


class RelayResponse(StreamingResponse):
    """ComfyUI's answer on its way to the client, its bytes and headers unchanged (repeated ones
    kept, nothing added or recomputed); the client must take each part within `timeout_s`, else
    it is cut off and ComfyUI's connection goes back to the pool."""

    def __init__(
        self,
        upstream: httpx.Response,
        target: str,
        timeout_s: float,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.relay = relay_body(upstream, target)
        super().__init__(self.relay, status_code=upstream.status_code)
        self.raw_headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in (response_headers(upstream.headers) if headers is None else headers)
        ]
        self.timeout_s, self.target = timeout_s, target

    async def stream_response(self, send: Send) -> None:
        async def in_time(message: Message) -> None:
            try:
                async with asyncio.timeout(self.timeout_s):
                    await send(message)
            except TimeoutError:
                raise SlowClient from None

        try:
            await super().stream_response(in_time)
        except SlowClient:
            log.warning(
                "a client took no part of the answer to %s for PASSTHROUGH_TIMEOUT_S (%gs): "
                "cut off", self.target, self.timeout_s,
            )  # fmt: skip
        finally:
            await self.relay.aclose()


async def relay_body(upstream: httpx.Response, target: str) -> AsyncGenerator[bytes, None]:
    """ComfyUI's body as it arrives, bytes unchanged (compressed stays compressed)."""
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    except httpx.TransportError as e:
        # The status line has gone out: all we can do is end the body short, which the
        # client sees as a broken response rather than a complete wrong one.
        log.warning("ComfyUI broke off the answer to %s: %r", target, e)
    finally:
        await upstream.aclose()
