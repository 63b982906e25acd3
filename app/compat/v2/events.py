"""GET /api/v2/jobs/{id}/events: the gateway's record of a job, as v2 Server-Sent Events.

Frames are comfy-api-proxy's: `event: <name>` and compact JSON `data:`, no `id:`; a
`: keepalive` comment every 15 s of silence. On connect a `status` (with `queue_position` while
queued), and `progress` if running; a finished job's stream then sends its `output` events and
ends. After that, `status` on every change (the proxy sends none until the end), `progress` per
sampler step (at most every 0.5 s, as the proxy), `preview` with the job's newest latent
preview when one is published (`{node_id, content_type, data_base64}`, as the proxy; at most
PREVIEW_MAX_PER_S, newest wins where the proxy drops), and at the end `status` then one `output` per
file. The stream ends with the job, never early: it follows the gateway's own record, which
learns the outcome once, so it cannot end on a stale `running` as the proxy's can.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from app.compat.v2.jobs import TERMINAL, live_progress, outputs, progress_of, status_of
from app.compat.v2.state import V2Job
from app.jobs.records import JobView

HEARTBEAT_S = 15.0
PROGRESS_EVERY_S = 0.5


def frame(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def v2_preview(data: dict[str, Any]) -> dict[str, Any]:
    """A `preview` event of the gateway's stream (app.jobs.preview) as v2's `preview`."""
    media_type, _, encoded = str(data["image"]).removeprefix("data:").partition(";base64,")
    return {"node_id": data.get("node") or "", "content_type": media_type, "data_base64": encoded}


def status_event(status: str, queue_position: int | None) -> dict[str, Any]:
    event: dict[str, Any] = {"status": status}
    if queue_position is not None:
        event["queue_position"] = queue_position
    return event


def stream(
    job: V2Job, record: JobView | None, base: str, queue_position: int | None
) -> StreamingResponse:
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    frames = _frames(job, record, base, queue_position)
    return StreamingResponse(frames, media_type="text/event-stream", headers=headers)


async def _frames(
    job: V2Job, record: JobView | None, base: str, queue_position: int | None
) -> AsyncIterator[str]:
    # Read the status and the event count together: nothing happens between them.
    status = status_of(record)
    after = record.last_event_id if record is not None else 0
    yield frame("status", status_event(status, queue_position if status == "queued" else None))
    if record is None or status in TERMINAL:
        for output in outputs(job, record, base) if status == "succeeded" else []:
            yield frame("output", output)
        return
    if status == "running":
        yield frame("progress", progress_of(record))
    last_progress = 0.0
    async for event in record.follow(after, idle_s=HEARTBEAT_S):
        if event is None:
            yield ": keepalive\n\n"
        elif event.type == "running":
            yield frame("status", {"status": "running"})
        elif event.type == "progress" and time.monotonic() - last_progress >= PROGRESS_EVERY_S:
            last_progress = time.monotonic()
            yield frame("progress", live_progress(event.data))
        elif event.type == "preview":
            yield frame("preview", v2_preview(event.data))
        elif event.type == "complete":
            yield frame("status", {"status": "succeeded"})
            for output in outputs(job, record, base):
                yield frame("output", output)
        elif event.type == "failed":
            yield frame("status", {"status": status_of(record)})
