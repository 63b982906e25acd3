"""Wire: a lean HTTP/1.1 client for the calls the gateway makes to its own ComfyUI.

A job's submit is on its critical path. httpx spends about 0.7 ms of CPU on each call (URL and
header models, cookies, anyio, h11); the same call over a kept-alive asyncio stream costs about
0.1 ms. Wire speaks only what ComfyUI's aiohttp server answers over plain HTTP: a status line,
headers, and a body with a Content-Length, chunked, or up to the connection's end. It asks for
no compression (ComfyUI's `--enable-compress-response-body` gzips only for clients that ask).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

MAX_IDLE = 8  # kept-alive connections; more concurrent calls open (and then close) their own
MAX_HEAD_BYTES = 64 * 1024
# What a request target may hold as it is; the rest (spaces, CR/LF, non-ASCII) is %-encoded.
TARGET_SAFE = "/?&=%:@!$'()*+,;~-._"

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class WireError(Exception):
    """The call failed in transport: refused, reset, timed out, or an answer that is not HTTP."""


@dataclass(frozen=True)
class WireResponse:
    status_code: int
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class Wire:
    """Kept-alive connections to one `http://host:port`; each call gets one to itself."""

    def __init__(self, base_url: str, *, timeout_s: float) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or not url.hostname or not url.port:
            raise ValueError(f"Wire speaks plain HTTP to a host and port, not {base_url!r}")
        self.host, self.port = url.hostname, url.port
        self.timeout_s = timeout_s
        host_header = f"[{self.host}]" if ":" in self.host else self.host
        self._head_tail = f"Host: {host_header}:{self.port}\r\nAccept-Encoding: identity\r\n"
        self._idle: deque[Connection] = deque()

    async def get(self, path: str, params: dict[str, str] | None = None) -> WireResponse:
        return await self.request("GET", f"{path}?{urlencode(params)}" if params else path)

    async def post(self, path: str, json_body: Any = None) -> WireResponse:
        """POST JSON; a value JSON cannot carry (NaN, infinity, a lone surrogate) is a
        ValueError here, before anything is sent (Python's json would write `NaN`)."""
        body = b"" if json_body is None else _json_bytes(json_body)
        return await self.request("POST", path, body)

    async def request(self, method: str, target: str, body: bytes = b"") -> WireResponse:
        target = quote(target, safe=TARGET_SAFE)
        head = f"{method} {target} HTTP/1.1\r\n{self._head_tail}Content-Length: {len(body)}\r\n"
        if body:
            head += "Content-Type: application/json\r\n"
        message = (head + "\r\n").encode() + body
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._exchange(message)
        except TimeoutError as e:
            raise WireError(f"no answer within {self.timeout_s:g} s") from e

    async def _exchange(self, message: bytes) -> WireResponse:
        reused = self._idle_connection()
        if reused is not None:
            try:
                return await self._over(reused, message)
            except _Unanswered:
                pass  # the server had closed the kept-alive connection: a fresh one, once
        try:
            connection = await asyncio.open_connection(self.host, self.port, limit=MAX_HEAD_BYTES)
        except OSError as e:
            raise WireError(f"cannot connect to {self.host}:{self.port}: {e!r}") from e
        try:
            return await self._over(connection, message)
        except _Unanswered as e:
            raise WireError(str(e)) from e

    def _idle_connection(self) -> Connection | None:
        while self._idle:
            reader, writer = self._idle.pop()
            if not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.close()
        return None

    async def _over(self, connection: Connection, message: bytes) -> WireResponse:
        """One exchange on one connection, which goes back to the idle ones when it can."""
        reader, writer = connection
        keep = False
        try:
            try:
                writer.write(message)
                head = await reader.readuntil(b"\r\n\r\n")
            except (OSError, asyncio.IncompleteReadError) as e:
                raise _Unanswered(f"the connection closed before an answer: {e!r}") from e
            response, keep = await _read_answer(reader, head)
            return response
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
            raise WireError(f"a broken answer: {e!r}") from e
        finally:
            if keep and len(self._idle) < MAX_IDLE:
                self._idle.append(connection)
            else:
                writer.close()

    async def aclose(self) -> None:
        while self._idle:
            _, writer = self._idle.pop()
            writer.close()


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


class _Unanswered(Exception):
    """Nothing came back on this connection: safe to send again on a fresh one."""


async def _read_answer(reader: asyncio.StreamReader, head: bytes) -> tuple[WireResponse, bool]:
    """The answer whose head (status line and headers) was read; whether to keep the connection."""
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError(f"not an HTTP/1 answer: {lines[0][:80]!r}")
    status = int(rest[:3])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return WireResponse(status, await _chunked(reader)), keep
    if "content-length" in headers:
        return WireResponse(status, await reader.readexactly(int(headers["content-length"]))), keep
    if status in (204, 304) or 100 <= status < 200:
        return WireResponse(status, b""), keep
    return WireResponse(status, await reader.read()), False  # up to the connection's end


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    pieces: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            return b"".join(pieces)
        pieces.append(await reader.readexactly(size))
        await reader.readexactly(2)
