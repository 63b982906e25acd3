"""A job's outcome as the fleet's Redis holds it: written once by the gateway that ran the job,
read back by any gateway (the request that waits for it, GET /prompt/{id}, a facade, webhooks
delivered again).

Redis holds the outcome as the /prompt body (the job's `complete` event, which an SSE client
reads as it is), each file's content as base64 or, when the job uploaded its outputs, as the
URL the upload gave. Until results move by reference, that is also what FLEET_MAX_RESULT_MB
bounds. Read back, a file keeps its base64 as it came (`ResultFile.encoded`): a /prompt answer
sends it on without decoding it, and its bytes are decoded only for a facade that asks.
"""

from __future__ import annotations

from typing import Any

from app.core.outcome import JobOutcome, ResultFile, no_time
from app.core.schemas import Stats


def to_redis(outcome: JobOutcome) -> dict[str, Any]:
    """The outcome of a succeeded job as Redis keeps it (its `complete` event's data)."""
    body = outcome.body()
    body["images"] = [f.content for f in outcome.files]
    return body


def from_redis(body: dict[str, Any], *, uploaded: bool) -> JobOutcome:
    """The outcome read back from Redis; `uploaded`: the job's options named an upload, so each
    file's content is where it went, not its base64."""
    files = tuple(
        _file(name, content, uploaded=uploaded)
        for name, content in zip(body.get("filenames", []), body.get("images", []), strict=True)
    )
    stats = body.get("stats")
    return JobOutcome(
        id=str(body.get("id", "")),
        prompt=body.get("prompt") or {},
        files=files,
        stats=Stats.model_validate(stats) if stats is not None else no_time(),
        input=body.get("input"),
        warnings=tuple(body.get("warnings") or ()),
    )


def uploads(spec: dict[str, Any]) -> bool:
    """Whether the job (its spec, as the fleet's queue carries it) had its outputs uploaded."""
    return bool((spec.get("options") or {}).get("upload"))


def _file(name: str, content: str, *, uploaded: bool) -> ResultFile:
    if uploaded:
        return ResultFile(name, 0, location=content)
    return ResultFile(name, decoded_size(content), encoded=content)


def decoded_size(content: str) -> int:
    """How many bytes a base64 text holds, without decoding it."""
    return len(content) * 3 // 4 - content[-2:].count("=")
