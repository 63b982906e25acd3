"""ComfyUI's websocket through the gateway, at /comfy/ws and /ws: relayed both ways, text and
binary frames, for one clientId (never the gateway's own, whose events it would steal).

ComfyUI gives a clientId's events to its newest socket, and a prompt sent without a client_id
has its events sent to every socket. So the query is read once, as ComfyUI reads it (a repeated
`clientId` is refused: ComfyUI would take the first, a check the last), and goes on re-encoded;
a clientId is held by the first API key that uses it (app.compat.comfy.owners: 409 for
another key, or for the gateway's own event streams); and a key's socket (API keys on, not an
admin key) passes on only events of the key's own prompts and those that name no prompt (the
queue's size). ComfyUI runs one prompt at a time and sends a socket its events in order, so a
binary frame (a preview) belongs to the prompt the socket last heard of, and goes to the key's
socket only when that prompt is the key's.

Previews go only to a socket that named its clientId. The gateway starts ComfyUI with previews
(PREVIEW_METHOD, default `auto`), where a default ComfyUI sends none, and ComfyUI sends the
previews of a prompt without a client_id to every socket: a client that connects without a
clientId and reads every frame as JSON (ComfyClient.mjs of this project's first deployment)
would break on them. Clients that show previews (ComfyUI's frontend) name their clientId.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Container

import websockets
from fastapi import APIRouter, WebSocket
from websockets.asyncio.client import ClientConnection, connect

from app.compat.comfy.parse import encoded, parse_query
from app.compat.comfy.state import PassthroughDep
from app.core.errors import ComfyUnavailable, Conflict, GatewayError
from app.core.settings import PassthroughMode
from app.edge.errors import error_response
from app.gateway import Gateway
from app.routes.deps import CallerDep, GatewayDep

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
async def relay_events(
    websocket: WebSocket, gateway: GatewayDep, passthrough: PassthroughDep, caller: CallerDep
) -> None:
    """ComfyUI's websocket for one clientId, relayed both ways, text and binary frames."""
    try:
        params = parse_query(websocket.scope["query_string"])
        client_id = params.get("clientId")
        if gateway.comfy.is_own_client_id(client_id):
            # ComfyUI gives a clientId's events to its newest socket: this would steal the
            # gateway's own event stream, and every job in flight would hang.
            raise Conflict("this clientId is in use by the gateway", location="clientId")
        if client_id and passthrough.mode is PassthroughMode.SAFE and not caller.admin:
            passthrough.clients.claim(client_id, caller.id)
        check_running(gateway)
        url = gateway.comfy.ws_url + (f"?{encoded(params)}" if params else "")
        upstream = await connect(url, max_size=2**26, open_timeout=5, compression=None)
    except GatewayError as e:
        await deny(websocket, e)
        return
    except (OSError, TimeoutError, websockets.WebSocketException) as e:
        await deny(websocket, ComfyUnavailable(f"ComfyUI's websocket is not reachable ({e!r})"))
        return
    owned = passthrough.submitted.of(caller.id) if caller.tenant else None
    async with upstream:
        await websocket.accept()
        await relay(websocket, upstream, owned, previews=bool(client_id))


async def deny(websocket: WebSocket, error: GatewayError) -> None:
    """Refuse before the handshake: an HTTP error where the server allows it, else a close."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(error))
    else:
        await websocket.close(code=1013 if error.status == 503 else 1008, reason=error.code)


class EventFilter:
    """Which of ComfyUI's frames a key's socket passes on: those of its own prompts."""

    def __init__(self, owned: Container[str]) -> None:
        self.owned = owned
        self.current: object = None  # the prompt this socket last heard of

    def passes(self, message: str | bytes) -> bool:
        if isinstance(message, bytes):
            return self.current in self.owned
        try:
            data = json.loads(message).get("data")
        except (ValueError, AttributeError):
            return False
        if not isinstance(data, dict) or "prompt_id" not in data:
            return True  # the queue's size, the clientId given to this socket
        self.current = data["prompt_id"]
        return self.current in self.owned if isinstance(self.current, str) else False


async def relay(
    websocket: WebSocket,
    upstream: ClientConnection,
    owned: Container[str] | None = None,
    *,
    previews: bool = True,
) -> None:
    """Copy frames both ways until either side closes; then close the other. With `owned`,
    only the frames of those prompts (and of none) go down; without `previews`, no binary
    frame does."""
    events = EventFilter(owned) if owned is not None else None

    async def down() -> None:
        async for message in upstream:
            if events is not None and not events.passes(message):
                continue
            if isinstance(message, bytes) and not previews:
                continue
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
