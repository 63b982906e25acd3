"""A loopback webhook receiver inside the bench process that reads each body in pieces and
keeps none of it: it counts the bytes and, when the request is signed, checks the Standard
Webhooks signature over the pieces as they come (an HMAC updated piece by piece)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

PIECE = 1 << 20


@dataclass
class Received:
    """One delivery: where, how many body bytes, whether its signature held (None: unsigned)."""

    path: str
    size: int
    signature_ok: bool | None
    at: float  # time.perf_counter() when the last byte arrived


class WebhookSink:
    """An HTTP/1.1 server on 127.0.0.1; `expect(path)` is a future of that path's delivery."""

    def __init__(self, key: bytes | None) -> None:
        self.key = key
        self.waiting: dict[str, asyncio.Future[Received]] = {}
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> WebhookSink:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def expect(self, path: str) -> asyncio.Future[Received]:
        future = asyncio.get_running_loop().create_future()
        self.waiting[path] = future
        return future

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while await self._one(reader, writer):
                pass
        writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *lines = head.decode("latin-1").split("\r\n")
        path = request_line.split(" ")[1]
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines if line)
        }
        mac = self._mac(headers)
        size = 0
        async for piece in body_pieces(reader, headers):
            size += len(piece)
            if mac is not None:
                mac.update(piece)
        received = Received(path, size, self._verdict(mac, headers), time.perf_counter())
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        if (future := self.waiting.pop(path, None)) is not None and not future.done():
            future.set_result(received)
        return True

    def _mac(self, headers: dict[str, str]) -> hmac.HMAC | None:
        if self.key is None or "webhook-signature" not in headers:
            return None
        signed = f"{headers.get('webhook-id')}.{headers.get('webhook-timestamp')}."
        return hmac.new(self.key, signed.encode(), hashlib.sha256)

    @staticmethod
    def _verdict(mac: hmac.HMAC | None, headers: dict[str, str]) -> bool | None:
        if mac is None:
            return None
        expected = "v1," + base64.b64encode(mac.digest()).decode()
        given = headers["webhook-signature"].split()
        return any(hmac.compare_digest(expected, one) for one in given)


async def body_pieces(
    reader: asyncio.StreamReader, headers: dict[str, str]
) -> AsyncIterator[bytes]:
    """The body's bytes in pieces of at most PIECE, by Content-Length or chunked."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers expected
                return
            while size:
                piece = await reader.read(min(size, PIECE))
                if not piece:
                    raise asyncio.IncompleteReadError(b"", size)
                size -= len(piece)
                yield piece
            await reader.readexactly(2)
    left = int(headers.get("content-length", "0"))
    while left:
        piece = await reader.read(min(left, PIECE))
        if not piece:
            raise asyncio.IncompleteReadError(b"", left)
        left -= len(piece)
        yield piece
