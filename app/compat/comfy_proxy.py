"""/comfy/<path> and the websocket (/comfy/ws, /ws): ComfyUI's own API, passed through unchanged.

Existing ComfyUI clients switch to the gateway by changing their base URL and so gain its
supervision, probes, body cap and API keys. Bodies stream both ways (never held whole); the
BodySizeLimit middleware still counts the request body as it streams. The exceptions are small
and bounded: the bodies of POST /interrupt and /queue, read to decide whether they may go on,
and ComfyUI's answer to POST /prompt, read for the prompt id (app.passthrough has the rules).
Prompts sent this way are the client's own: nothing rewrites them, and the gateway's queue
depth counts them because it reads ComfyUI's queue from the status events every socket receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import httpx
import websockets
from fastapi import APIRouter, FastAPI, Request, WebSocket
from fastapi.responses import Response, StreamingResponse
from websockets.asyncio.client import ClientConnection, connect

from app.compat.passthrough import (
    BODY_CHECK_MAX_BYTES,
    Kind,
    Passthrough,
    SubmittedPrompts,
    answered_id,
    authorize,
    endpoint,
)
from app.core.errors import ComfyUnavailable, Conflict, GatewayError
from app.core.settings import PassthroughMode
from app.edge.errors import error_response
from app.gateway import Gateway

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


def upstream_target(raw_path: bytes, query: bytes) -> str:
    """The path and query for ComfyUI, still percent-encoded: `/comfy/view?x` -> `/view?x`."""
    path = raw_path.decode("latin-1").removeprefix(PREFIX) or "/"
    return f"{path}?{query.decode('latin-1')}" if query else path


def check_running(gateway: Gateway) -> None:
    # Fail fast while ComfyUI restarts, instead of a connection refused per request.
    if not gateway.comfy.reachable:
        raise ComfyUnavailable("ComfyUI is not running now (starting, restarting or stopping)")


def install(app: FastAPI, mode: PassthroughMode) -> None:
    """Serve the passthrough on `app`, forwarding what `mode` opens."""
    gateway: Gateway = app.state.gateway
    submitted = SubmittedPrompts(foreign=gateway.comfy.is_gateway_prompt)
    app.state.passthrough = Passthrough(mode, submitted)
    app.include_router(router)


@router.api_route(f"{PREFIX}/{{path:path}}", methods=METHODS, include_in_schema=False)
async def forward(path: str, request: Request) -> Response:
    """A ComfyUI endpoint: the request goes on as it came, the answer comes back as it is."""
    gateway: Gateway = request.app.state.gateway
    passthrough: Passthrough = request.app.state.passthrough
    scope = request.scope
    target = upstream_target(scope.get("raw_path") or scope["path"].encode(), scope["query_string"])
    headers = request_headers(scope["headers"])
    names = {k.lower() for k, _ in headers}
    has_body = "content-length" in names or "transfer-encoding" in {
        k.decode().lower() for k, _ in scope["headers"]
    }
    content: AsyncIterator[bytes] | bytes | None = request.stream() if has_body else None
    found = None
    if passthrough.mode is PassthroughMode.SAFE:
        found = endpoint(request.method, target.split("?", 1)[0])
        body: bytes | None = b""
        if found.reads_body and has_body:
            body = content = await read_at_most(request.stream(), BODY_CHECK_MAX_BYTES)
            # httpx sets it from the bytes read, so ComfyUI reads exactly what was checked.
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        authorize(found, passthrough.submitted, body, headers)
    check_running(gateway)
    upstream = await gateway.comfy.forward(request.method, target, headers, content)
    chunks = relay_body(upstream, target)
    if found is not None and found.kind is Kind.SUBMIT and upstream.status_code == 200:
        chunks = await note_prompt_id(upstream, chunks, passthrough.submitted)
    response = StreamingResponse(chunks, status_code=upstream.status_code)
    # Set raw so that repeated headers stay repeated, and nothing is added or recomputed.
    response.raw_headers = [
        (k.lower().encode("latin-1"), v.encode("latin-1"))
        for k, v in response_headers(upstream.headers)
    ]
    return response


async def read_at_most(stream: AsyncIterator[bytes], limit: int) -> bytes | None:
    """The whole body, or None once it grows past `limit` bytes (the rest is left unread)."""
    body = bytearray()
    async for chunk in stream:
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def note_prompt_id(
    upstream: httpx.Response, chunks: AsyncIterator[bytes], submitted: SubmittedPrompts
) -> AsyncIterator[bytes]:
    """Remember the prompt id in ComfyUI's answer to POST /prompt; the answer goes on unchanged.

    Read before the answer goes out, so that the client can interrupt its prompt at once.
    """
    head: list[bytes] = []
    prompt_id = None
    while (size := sum(map(len, head))) <= BODY_CHECK_MAX_BYTES:
        chunk = await anext(chunks, None)
        if chunk is None:  # all of it, small as an answer to POST /prompt is
            prompt_id = prompt_id_in(upstream.headers, b"".join(head))
            break
        head.append(chunk)
    if prompt_id is None:
        log.warning("no prompt_id in ComfyUI's %d-byte answer to a passthrough POST /prompt", size)
    else:
        submitted.add(prompt_id)

    async def replay() -> AsyncIterator[bytes]:
        for chunk in head:
            yield chunk
        async for chunk in chunks:
            yield chunk

    return replay()


def prompt_id_in(headers: httpx.Headers, raw: bytes) -> str | None:
    # A Response of our own decodes the bytes as they came (gzip, if ComfyUI compressed them).
    try:
        return answered_id(httpx.Response(200, headers=headers, content=raw).json())
    except (ValueError, httpx.DecodingError):
        return None


async def relay_body(upstream: httpx.Response, target: str) -> AsyncIterator[bytes]:
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


@router.websocket(f"{PREFIX}/ws")
# Also at the root: clients such as ComfyClient.mjs derive their socket from the base URL's host
# alone, `ws://<host>/ws`, whatever the base URL's path.
@router.websocket("/ws")
async def relay_events(websocket: WebSocket) -> None:
    """ComfyUI's websocket for one clientId, relayed both ways, text and binary frames."""
    gateway: Gateway = websocket.app.state.gateway
    if gateway.comfy.is_own_client_id(websocket.query_params.get("clientId")):
        # ComfyUI gives a clientId's events to its newest socket: this would steal the
        # gateway's own event stream, and every job in flight would hang.
        taken = Conflict("this clientId is in use by the gateway", location="clientId")
        await deny(websocket, taken)
        return
    query = websocket.scope["query_string"].decode("latin-1")
    url = f"{gateway.comfy.ws_url}?{query}" if query else gateway.comfy.ws_url
    try:
        check_running(gateway)
        upstream = await connect(url, max_size=2**26, open_timeout=5, compression=None)
    except GatewayError as e:
        await deny(websocket, e)
        return
    except (OSError, TimeoutError, websockets.WebSocketException) as e:
        await deny(websocket, ComfyUnavailable(f"ComfyUI's websocket is not reachable ({e!r})"))
        return
    async with upstream:
        await websocket.accept()
        await relay(websocket, upstream)


async def deny(websocket: WebSocket, error: GatewayError) -> None:
    """Refuse before the handshake: an HTTP error where the server allows it, else a close."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(error))
    else:
        await websocket.close(code=1013 if error.status == 503 else 1008, reason=error.code)


async def relay(websocket: WebSocket, upstream: ClientConnection) -> None:
    """Copy frames both ways until either side closes; then close the other."""

    async def down() -> None:
        async for message in upstream:
            if isinstance(message, bytes):
                await websocket.send_bytes(message)  # latent previews
            else:
                await websocket.send_text(message)

    async def up() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await upstream.send(message["text"])
            elif message.get("bytes") is not None:
                await upstream.send(message["bytes"])

    tasks = [asyncio.create_task(down()), asyncio.create_task(up())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if tasks[0] in done:  # ComfyUI went away (exit, restart): tell the client so it reconnects
        with contextlib.suppress(RuntimeError, OSError):
            await websocket.close(code=1012, reason="ComfyUI closed its websocket")
