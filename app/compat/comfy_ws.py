"""ComfyUI's websocket through the gateway, at /comfy/ws and /ws: relayed both ways, text and
binary frames, for one clientId (never the gateway's own, whose events it would steal)."""

from __future__ import annotations

import asyncio
import contextlib

import websockets
from fastapi import APIRouter, WebSocket
from websockets.asyncio.client import ClientConnection, connect

from app.core.errors import ComfyUnavailable, Conflict, GatewayError
from app.edge.errors import error_response
from app.gateway import Gateway

router = APIRouter(tags=["comfyui"])

PREFIX = "/comfy"


def check_running(gateway: Gateway) -> None:
    # Fail fast while ComfyUI restarts, instead of a connection refused per request.
    if not gateway.comfy.reachable:
        raise ComfyUnavailable("ComfyUI is not running now (starting, restarting or stopping)")


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
