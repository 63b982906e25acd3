"""JobOutcome: how one job ended, as data: its files and its stats, or its error.

The Finisher (app.jobs.finish) makes it once, from what ComfyUI wrote; in a fleet, the gateway
that waits for a job another one ran reads it back from Redis (app.fleet.results). The job's
task returns it and its record holds it. Every facade renders its own answer from it, and none
holds a whole file, or its base64, in memory to do so: a file is read in chunks (`chunks`,
`iter_chunks`) and its base64 made in aligned pieces as it goes out (`base64_chunks`);
app.core.streamed_json splices those pieces into a JSON body.

A file is in memory (`data`: small ones, and those a test or the result cache made), on disk
(`path`: a job's outputs, in the gateway's spool, kept there while anything refers to them:
`keeper`), wherever an upload put it (`location`, a URL: then the gateway holds no bytes of
it), or, read back from a fleet's Redis, on the gateway that ran the job (`remote`: fetched
from there over HTTP as it goes out, app.core.remote_file).
"""

from __future__ import annotations

import asyncio
import base64
import mimetypes
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from app.core.errors import GatewayError
from app.core.remote_file import RemoteFile
from app.core.schemas import PromptResponse, Stats, WorkflowResponse

FileKind = Literal["image", "video", "audio", "other"]

# A file goes out in pieces of this many bytes: a multiple of 3, so that each piece's base64 is
# whole (no padding inside) and the pieces' base64 joined is the file's (1 MiB of base64 each).
CHUNK_BYTES = 3 << 18
# Reading a piece this small inline is cheaper than a hop to a worker thread.
INLINE_READ_MAX_BYTES = 1 << 20


def content_type_of(name: str) -> str:
    """A file's media type, from its name."""
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def kind_of(content_type: str) -> FileKind:
    major = content_type.split("/")[0]
    if major == "image":
        return "image"
    if major == "video":
        return "video"
    if major == "audio":
        return "audio"
    return "other"


def no_time() -> Stats:
    """The stats of an outcome that took no time (one that Redis holds without them)."""
    return Stats(queue=0, execution=0, postprocess=0, total=0)


@dataclass(frozen=True, eq=False)
class ResultFile:
    """One output file of a job."""

    name: str
    size: int  # bytes; an uploaded file's as it was sent
    node: str | None = None  # the node that wrote it; None where that is not known
    data: bytes | None = None  # its bytes, in memory
    path: Path | None = None  # or where its bytes lie on disk
    location: str | None = None  # or where an upload put it (then the gateway has no bytes)
    remote: RemoteFile | None = None  # or on the gateway of the fleet that ran the job
    content_type: str = ""  # "" is filled in from the name
    keeper: object | None = None  # keeps a spooled path on disk while this file is referred to

    def __post_init__(self) -> None:
        if not self.content_type:
            object.__setattr__(self, "content_type", content_type_of(self.name))

    @classmethod
    def of_bytes(cls, name: str, data: bytes, node: str | None = None) -> ResultFile:
        return cls(name, len(data), node, data=data)

    @property
    def kind(self) -> FileKind:
        return kind_of(self.content_type)

    @property
    def stored(self) -> bool:
        """Whether an upload holds it (its content is a URL, not bytes)."""
        return self.location is not None

    @property
    def base64_size(self) -> int:
        """The length of its base64, unread."""
        return 4 * -(-self.size // 3)

    def read(self) -> bytes:
        """All its bytes at once (from disk when it lies there; a blocking read): only for
        what needs them whole (a thumbnail, a format conversion). An uploaded file has none
        here: ValueError."""
        if self.data is not None:
            return self.data
        if self.path is not None:
            return self.path.read_bytes()
        if self.remote is not None:
            return b"".join(self.remote.iter_chunks(CHUNK_BYTES))
        raise ValueError(f"{self.name} was uploaded to {self.location}; the gateway holds none")

    def iter_chunks(self, size: int = CHUNK_BYTES) -> Iterator[bytes]:
        """Its bytes in pieces of `size` (the last one shorter), read as they are asked for:
        for a worker thread (the reads block)."""
        if self.path is not None and self.data is None:
            with open(self.path, "rb") as f:
                while piece := f.read(size):
                    yield piece
                    del piece  # not held while the next one is read
            return
        if self.remote is not None and self.data is None:
            yield from self.remote.iter_chunks(size)
            return
        data = self.read()
        for start in range(0, len(data), size):
            yield data[start : start + size]

    async def chunks(self, size: int = CHUNK_BYTES) -> AsyncGenerator[bytes, None]:
        """Its bytes in pieces of `size`, a large file's read in a worker thread piece by
        piece: the event loop never waits on the disk, and one piece is in memory at a time.
        A remote file's come over HTTP, cut to `size` too."""
        if self.remote is not None and self.data is None:
            async for piece in self.remote.chunks(size):
                yield piece
            return
        if self.path is None or self.data is not None or self.size <= INLINE_READ_MAX_BYTES:
            for piece in self.iter_chunks(size):
                yield piece
            return
        f = await asyncio.to_thread(open, self.path, "rb")
        try:
            while piece := await asyncio.to_thread(f.read, size):
                yield piece
                del piece  # not held while the next one is read
        finally:
            f.close()

    def iter_base64(self) -> Iterator[bytes]:
        """Its base64 in pieces, ASCII, for a worker thread (an uploaded file's answer is its
        URL, which app.core.streamed_json writes as text)."""
        for piece in self.iter_chunks(CHUNK_BYTES):
            yield base64.b64encode(piece)

    async def base64_chunks(self) -> AsyncIterator[bytes]:
        """Its base64 in pieces, ASCII, made as they are asked for."""
        async for piece in self.chunks(CHUNK_BYTES):
            yield base64.b64encode(piece)

    @cached_property
    def content(self) -> str:
        """Its base64 (or where an upload put it) as one string: only for small files and
        tests; answers stream it with base64_chunks."""
        if self.location is not None:
            return self.location
        return base64.b64encode(self.read()).decode("ascii")


@dataclass(frozen=True, eq=False)
class JobOutcome:
    """How a job ended: a succeeded job's files and stats, as the /prompt answer reports them,
    or a failed (or interrupted) one's error, with no files. The runner makes one for every
    job, its record and its webhooks take it; the job's task returns a succeeded one and
    raises a failed one's error, so a waiting request answers with that error."""

    id: str
    prompt: dict[str, Any]  # the graph as submitted to ComfyUI
    files: tuple[ResultFile, ...] = ()
    stats: Stats = field(
        default_factory=lambda: Stats(queue=0, execution=0, postprocess=0, total=0)
    )
    input: dict[str, Any] | None = None  # a workflow's input, defaults filled in
    warnings: tuple[str, ...] = ()  # what the request asked for and the job did not honour
    error: GatewayError | None = None  # why it failed; None: it succeeded

    @classmethod
    def failed(cls, id: str, prompt: dict[str, Any], error: GatewayError) -> JobOutcome:
        return cls(id, prompt, error=error)

    @property
    def succeeded(self) -> bool:
        return self.error is None

    @property
    def filenames(self) -> list[str]:
        return [f.name for f in self.files]

    @cached_property
    def head(self) -> PromptResponse:
        """The /prompt (or workflow endpoint's) 200 body without its images (`images` empty):
        what body() fills them into."""
        fields: dict[str, Any] = dict(
            id=self.id,
            prompt=self.prompt,
            images=[],
            filenames=self.filenames,
            stats=self.stats,
            warnings=list(self.warnings) or None,
        )
        if self.input is not None:
            return WorkflowResponse(**fields, input=self.input)
        return PromptResponse(**fields)

    def body(self) -> dict[str, Any]:
        """The /prompt 200 body as JSON data (the HTTP answer, the SSE `complete` event,
        GET /prompt/{id}, the v2 webhook), each of `images` the ResultFile itself: rendered
        with app.core.streamed_json, which streams its base64 (or writes its URL)."""
        body = self.head.model_dump(mode="json")
        body["images"] = list(self.files)
        return body
