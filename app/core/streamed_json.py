"""A JSON body whose file contents are streamed: the small rest is serialised once, each
file's base64 (app.core.outcome.ResultFile) is read and encoded in pieces as the body goes out.

A payload names a file by putting the ResultFile itself where its content belongs (an uploaded
file's content is its URL). The body's length is known before a byte is read, and it can be
produced any number of times with the same bytes: a signed webhook hashes it in a first pass
and sends it in a second, so no more than one piece of a file is ever in memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from app.core.js_json import js_dumps
from app.core.outcome import JobOutcome, ResultFile

Part = bytes | ResultFile
INLINE_HASH_MAX_BYTES = 1 << 16
# A body up to this size whose files are all in memory goes out whole: a stream costs a task.
SMALL_BODY_BYTES = 1 << 20


def compact_dumps(value: Any, default: Callable[[Any], Any]) -> bytes:
    """json.dumps as FastAPI's answers are written (compact, UTF-8)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=default).encode()


def javascript_dumps(value: Any, default: Callable[[Any], Any]) -> bytes:
    """JSON.stringify's bytes (app.core.js_json), for bodies a Node receiver verifies."""
    return js_dumps(value, default=default)


@dataclass(frozen=True)
class StreamedJson:
    """A JSON body as text pieces and the files spliced between them."""

    parts: tuple[Part, ...]

    @classmethod
    def of(cls, payload: Any, *, javascript: bool = False) -> StreamedJson:
        """The body of `payload`, each ResultFile in it written as a JSON string of its base64
        (or URL). `javascript`: written as JSON.stringify writes it (webhooks)."""
        files: list[ResultFile] = []
        token = f"cgw-{uuid.uuid4().hex}-"  # no client's string can be it

        def marker(value: Any) -> str:
            if not isinstance(value, ResultFile):
                raise TypeError(f"{type(value).__name__} is not JSON serializable")
            if value.location is not None:
                return value.location  # an uploaded file's URL: written (and escaped) as text
            files.append(value)
            return f"{token}{len(files) - 1}"

        dumps = javascript_dumps if javascript else compact_dumps
        text = dumps(payload, marker)
        if not files:
            return cls((text,))
        parts: list[Part] = []
        pieces = re.split(rb'"' + re.escape(token.encode()) + rb'(\d+)"', text)
        for index, piece in enumerate(pieces):
            if index % 2 == 0:
                parts.append(piece)
            else:
                parts += [b'"', files[int(piece)], b'"']
        return cls(tuple(p for p in parts if not isinstance(p, bytes) or p))

    @property
    def size(self) -> int:
        """The body's length in bytes, without reading a file."""
        return sum(len(p) if isinstance(p, bytes) else p.base64_size for p in self.parts)

    @property
    def small(self) -> bool:
        """Whether it may be sent whole: at most SMALL_BODY_BYTES, every file in memory (one on
        disk or on the fleet's gateway that ran the job is never read on the event loop)."""
        in_memory = all(isinstance(p, bytes) or p.data is not None for p in self.parts)
        return in_memory and self.size <= SMALL_BODY_BYTES

    async def chunks(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            if isinstance(part, bytes):
                yield part
            else:
                async for piece in part.base64_chunks():
                    yield piece

    def iter_chunks(self) -> Iterator[bytes]:
        """The same bytes, for a worker thread (the reads block)."""
        for part in self.parts:
            if isinstance(part, bytes):
                yield part
            else:
                yield from part.iter_base64()

    async def hmac_sha256(self, key: bytes, prefix: bytes) -> bytes:
        """HMAC-SHA256 of prefix + the body, in one pass over it: a large piece is hashed in a
        worker thread (hashlib lets go of the GIL), so the event loop is never held."""
        mac = hmac.new(key, prefix, hashlib.sha256)
        async for piece in self.chunks():
            if len(piece) > INLINE_HASH_MAX_BYTES:
                await asyncio.to_thread(mac.update, piece)
            else:
                mac.update(piece)
        return mac.digest()

    def whole(self) -> bytes:
        """The whole body at once: only for small ones (tests, a body with no file)."""
        return b"".join(self.iter_chunks())


def prompt_answer(outcome: JobOutcome) -> StreamedJson:
    """The /prompt (or workflow endpoint's) 200 body: the rest written once by pydantic's own
    serialiser, `images` last, each file's base64 spliced in as it goes out. The job path's
    answer: a third of the cost of StreamedJson.of over the body's dict."""
    head = outcome.head.model_dump_json(exclude={"images"}).encode()
    parts: list[Part] = [head[:-1] + b',"images":[']
    for index, file in enumerate(outcome.files):
        if index:
            parts.append(b",")
        if file.location is not None:
            parts.append(json.dumps(file.location, ensure_ascii=False).encode())
        else:
            parts += [b'"', file, b'"']
    parts.append(b"]}")
    return StreamedJson(tuple(parts))
