"""ConsoleState: what `GET /console/state.json` answers, read from what the gateway holds.

Nothing here asks ComfyUI anything: instances are read from the pool (their GPUs as ComfyUI
named them when it started), jobs from the job backend (in a fleet, a few pipelined Redis reads),
the model cache from memory. However many pages poll, it is built at most once per FRESH_S, and
its lists are capped: a busy gateway answers in the same bounded size.

Two hooks for issue 22's other parts, read only where present (a job's record may not have them
yet): `priority` (a queued job's priority; the backend's `waiting` gives the order) and
`preview` (the newest preview of a running job; the page shows its image from the job's event
stream, which sends `preview` events).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Any

from app.comfy.instance import ComfyInstance
from app.core.keys import Caller
from app.core.status import JobProgress
from app.gateway import Gateway
from app.jobs.records import JobView

FRESH_S = 1.0  # a state this young is answered again instead of read anew
QUEUE_SHOWN = 100  # the queued jobs listed (the count says how many there are)
FINISHED_SHOWN = 30  # the last finished jobs listed
TEXT_MAX = 1000  # characters of an error message shown (a tenant's error may be long)
OPERATOR = Caller(None, admin=True)  # the page's reader sees every key's models, with sources


class ConsoleState:
    """Builds the page's state, at most once per FRESH_S."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._lock = asyncio.Lock()
        self._built: tuple[float, dict[str, Any]] | None = None

    async def read(self) -> dict[str, Any]:
        async with self._lock:  # pages polling at once share one read
            now = time.monotonic()
            if self._built is None or now - self._built[0] >= FRESH_S:
                self._built = (now, await self._build())
            return self._built[1]

    async def _build(self) -> dict[str, Any]:
        gateway = self.gateway
        backend = gateway.backend
        queued, finished, peers = await asyncio.gather(
            backend.queued(QUEUE_SHOWN), backend.finished(FINISHED_SHOWN), backend.peers()
        )
        waiting = {(job.owner, job.id) for job in queued}
        running = [  # the jobs on this gateway's instances that wait no more
            job.record for job in gateway.jobs.active.values() if job.key not in waiting
        ]
        return {
            "version": gateway.version,
            "comfyui_version": gateway.comfy.version,
            "started": gateway.lifecycle.started,
            "not_ready": gateway.readiness.not_ready_reason(),
            "queue_depth": gateway.readiness.queue_depth,
            "instances": [instance_view(i) for i in gateway.pool.instances],
            "queue": [asdict(job) for job in queued],  # id, owner, priority, position, waited_s
            "running": [running_view(record) for record in running],
            "finished": [finished_view(record) for record in finished],
            "models": gateway.models.cache.state(OPERATOR).model_dump(),
            "peers": [
                {"name": p.name, "holding": p.holding, "idle_s": p.idle_s, "this": p.this}
                for p in peers
            ],
        }


def instance_view(instance: ComfyInstance) -> dict[str, Any]:
    """One ComfyUI instance: /health's view, its memory, and its GPUs as ComfyUI named them."""
    rss_mb = instance.rss_mb()
    return {
        **instance.info(),
        "draining": instance.draining,
        "rss_mb": None if rss_mb is None else round(rss_mb, 1),
        "devices": [
            {"name": str(d.get("name", "")), "vram_total": d.get("vram_total")}
            for d in instance.client.devices
        ],
    }


def job_view(record: JobView) -> dict[str, Any]:
    """What every list says of a job; its owner is the id `?owner=` takes."""
    progress = JobProgress.of(record.progress)
    view: dict[str, Any] = {
        "id": record.id,
        "owner": record.owner,
        "workflow": record.workflow,
        "status": record.status,
        "instance": record.instance,
        "progress": {
            "node": progress.node,
            "step": progress.step,
            "max": progress.max,
            "percent": progress.percent,
        },
    }
    return view


def running_view(record: JobView) -> dict[str, Any]:
    """A running job, with what is known of its newest preview (the image comes by its events)."""
    view = job_view(record)
    preview = record.preview
    if preview is not None:
        view["preview"] = {
            name: getattr(preview, name, None) for name in ("node", "node_name", "step", "max")
        }
    return view


def finished_view(record: JobView) -> dict[str, Any]:
    """A finished job: whether it may have a thumbnail, or its error (a node's, when one failed)."""
    view = job_view(record)
    outcome = record.outcome
    if record.status == "succeeded":
        # A fleet's listing reads no results: its thumbnail is looked for when asked.
        view["thumbnail"] = outcome is None or any(
            f.kind == "image" and not f.stored for f in outcome.files
        )
        view["files"] = [f.name for f in outcome.files[:4]] if outcome is not None else []
    if record.error is not None:
        view["error"] = error_view(record.error)
    return view


def error_view(body: dict[str, Any]) -> dict[str, Any]:
    """A job's error body, bounded: its message and code, and the node that failed, if one."""
    details = body.get("details") if isinstance(body.get("details"), dict) else {}
    assert isinstance(details, dict)
    view = {
        "code": str(body.get("code", "")),
        "message": str(body.get("error", ""))[:TEXT_MAX],
        "location": body.get("location"),
    }
    if "node_id" in details:
        view |= {
            "node_id": str(details.get("node_id")),
            "class_type": str(details.get("class_type", "")),
            "exception_type": str(details.get("exception_type", "")),
            "exception_message": str(details.get("exception_message", ""))[:TEXT_MAX],
        }
    return view
