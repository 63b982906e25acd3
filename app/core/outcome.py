"""JobOutcome: how one job ended, as data: its files and its stats, or its error.

The Finisher (app.jobs.finish) makes it once, from what ComfyUI wrote; in a fleet, the gateway
that waits for a job another one ran reads it back from Redis (app.fleet.results). The job's
task returns it and its record holds it. Every facade renders its own answer from it: base64
is made only where an answer carries it (`ResultFile.content`, computed once per file), and
none decodes base64 the gateway made itself.

A file is in memory (`data`), on disk (`path`, read when asked), wherever an upload put it
(`location`, a URL: then the gateway holds no bytes of it), or, read back from a fleet's Redis,
as the base64 that travelled there (`encoded`, decoded only when its bytes are asked for).
"""

from __future__ import annotations

import base64
import mimetypes
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from app.core.errors import GatewayError
from app.core.schemas import PromptResponse, Stats, WorkflowResponse

FileKind = Literal["image", "video", "audio", "other"]


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
    node: str | None = None  # the node that wrote it; None where that is not known (a fleet's)
    data: bytes | None = None  # its bytes, in memory
    path: Path | None = None  # or where its bytes lie on disk
    location: str | None = None  # or where an upload put it (then the gateway has no bytes)
    encoded: str | None = None  # or its base64, as it came through the fleet's Redis
    content_type: str = ""  # "" is filled in from the name

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

    def read(self) -> bytes:
        """Its bytes (from disk when it lies there; a blocking read). An uploaded file has
        none here: ValueError."""
        if self.data is not None:
            return self.data
        if self.path is not None:
            return self.path.read_bytes()
        if self.encoded is not None:
            return base64.b64decode(self.encoded)
        raise ValueError(f"{self.name} was uploaded to {self.location}; the gateway holds none")

    @cached_property
    def content(self) -> str:
        """What a /prompt answer carries for it: its base64, or where an upload put it."""
        if self.location is not None:
            return self.location
        if self.encoded is not None:
            return self.encoded
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
    def response(self) -> PromptResponse:
        """The /prompt (or workflow endpoint's) 200 body: each file's content as base64. Made
        once (the job's record and its HTTP answer both render it)."""
        fields: dict[str, Any] = dict(
            id=self.id,
            prompt=self.prompt,
            images=[f.content for f in self.files],
            filenames=self.filenames,
            stats=self.stats,
            warnings=list(self.warnings) or None,
        )
        if self.input is not None:
            return WorkflowResponse(**fields, input=self.input)
        return PromptResponse(**fields)

    def body(self) -> dict[str, Any]:
        """The /prompt 200 body as JSON data (the SSE `complete` event, GET /prompt/{id}, the
        v2 webhook, the fleet's record)."""
        return self.response.model_dump(mode="json")

    @property
    def content_bytes(self) -> int:
        """What the /prompt body's contents weigh: the length of each file's base64 (or URL)."""
        return sum(len(f.content) for f in self.files)
