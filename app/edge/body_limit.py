"""ASGI middleware: the request body size cap."""

from __future__ import annotations

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import PayloadTooLarge
from app.core.numbers import whole_number
from app.edge.errors import render_error


class BodySizeLimit:
    """Refuses bodies over max_bytes: at once by Content-Length, or as a chunked body grows."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _error(self) -> PayloadTooLarge:
        mb = self.max_bytes / 2**20
        return PayloadTooLarge(
            "the request body is larger than MAX_BODY_SIZE_MB "
            f"({mb:.3g} MB, {self.max_bytes} bytes)"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and over(declared, self.max_bytes):
            await render_error(scope, self._error())(scope, receive, send)
            return
        received = 0
        refused = False

        # Past the cap we answer 413 ourselves and tell the app the client left: frameworks
        # turn an exception raised while parsing a body into their own 400.
        async def limited_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    await render_error(scope, self._error())(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except ClientDisconnect:
            if not refused:
                raise  # a real disconnect; ours was only a way to stop the body being read


def over(declared: bytes, max_bytes: int) -> bool:
    """Whether a Content-Length of ASCII digits is past the cap (int() refuses 4300 digits)."""
    size = whole_number(declared)
    return size is None or size > max_bytes  # more than 18 digits: past any cap
