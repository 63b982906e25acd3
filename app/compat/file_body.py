"""FileBody: an output file (app.core.outcome.ResultFile) as an HTTP body, whole or one range.

The facades that answer with a file itself (/api/v1 file bodies and images, v2 asset content)
send it in pieces as it goes out, read from where it lies (the spool on disk, for a file over
1 MiB): never whole in memory. Its length is known, so it goes with Content-Length; a range is
read from its first byte on (a seek), not from the file's start. HEAD sends the headers only.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass

from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from app.core.outcome import CHUNK_BYTES, INLINE_READ_MAX_BYTES, ResultFile

RANGE = re.compile(r"^bytes=([0-9]{0,18})-([0-9]{0,18})$")  # ASCII; longer: ignored


@dataclass(frozen=True)
class ByteRange:
    """The bytes start..end (both included) of a file of `size` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end}/{self.size}"


def byte_range(header: str | None, size: int) -> ByteRange | str | None:
    """The one range a `Range: bytes=a-b` asks for; None for the whole file (no header, or one
    this does not read: several ranges, other units); "unsatisfiable" when it cannot be met."""
    match = RANGE.match(header.strip()) if header else None
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    else:
        start, end = max(size - int(last), 0), size - 1
    if start >= size or start > end:
        return "unsatisfiable"
    return ByteRange(start, end, size)


def ranged(file: ResultFile, header: str | None, headers: Mapping[str, str] = {}) -> Response:
    """The file, or the one range a `Range: bytes=a-b` asks for (206; 416 when it cannot be
    met; others: the whole file), streamed."""
    headers = {**headers, "Accept-Ranges": "bytes"}
    wanted = byte_range(header, file.size)
    if wanted == "unsatisfiable":
        headers["Content-Range"] = f"bytes */{file.size}"
        return Response(status_code=416, headers=headers)
    if isinstance(wanted, ByteRange):
        headers["Content-Range"] = wanted.content_range
        return FileBody(file, headers, wanted, status_code=206)
    return FileBody(file, headers)


class FileBody(StreamingResponse):
    """A file (or a range of it) streamed in pieces, with its Content-Length and type."""

    def __init__(
        self,
        file: ResultFile,
        headers: Mapping[str, str] | None = None,
        part: ByteRange | None = None,
        *,
        status_code: int = 200,
    ) -> None:
        length = part.length if part is not None else file.size
        headers = {**(headers or {}), "Content-Length": str(length)}
        pieces = file.chunks() if part is None else range_chunks(file, part)
        super().__init__(pieces, status_code, headers, media_type=file.content_type)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") == "HEAD":  # the headers only: not a byte of the file is read
            start = {"type": "http.response.start", "status": self.status_code}
            await send({**start, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        await super().__call__(scope, receive, send)


async def range_chunks(file: ResultFile, part: ByteRange) -> AsyncIterator[bytes]:
    """The bytes of one range of the file, in pieces: a file on disk is read from the range's
    first byte (in a worker thread when large); one in memory is sliced."""
    if file.remote is not None and file.data is None:  # a fleet's, on the gateway that ran it
        at = 0
        async for piece in file.chunks():  # as skipped(), over pieces that come over HTTP
            if kept := within(piece, at, part):
                yield kept
            at += len(piece)
            if at > part.end:
                return
        return
    if file.path is None or file.data is not None:
        for piece in skipped(file.iter_chunks(), part):
            yield piece
        return
    if part.length <= INLINE_READ_MAX_BYTES:
        yield read_range(file, part.start, part.length)
        return
    f = await asyncio.to_thread(open, file.path, "rb")
    try:
        await asyncio.to_thread(f.seek, part.start)
        left = part.length
        while left > 0 and (piece := await asyncio.to_thread(f.read, min(CHUNK_BYTES, left))):
            left -= len(piece)
            yield piece
    finally:
        f.close()


def read_range(file: ResultFile, start: int, length: int) -> bytes:
    """A short range of a file on disk, read at once."""
    assert file.path is not None
    with open(file.path, "rb") as f:
        f.seek(start)
        return f.read(length)


def skipped(pieces: Iterator[bytes], part: ByteRange) -> Iterator[bytes]:
    """The pieces of a whole file cut down to one range (for a file held in memory)."""
    at = 0
    for piece in pieces:
        if kept := within(piece, at, part):
            yield kept
        at += len(piece)
        if at > part.end:
            return


def within(piece: bytes, at: int, part: ByteRange) -> bytes:
    """What of a piece (the file's bytes from `at` on) lies in the range; b"" if nothing."""
    lo, hi = max(part.start - at, 0), min(part.end + 1 - at, len(piece))
    return piece[lo:hi] if lo < hi else b""
