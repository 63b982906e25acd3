"""A v2 Job, as comfy-api-proxy shapes it, from the gateway's record of the job.

The gateway's statuses map onto v2's: queued, running, succeeded, failed, and interrupted as
`canceled`; a job the gateway no longer keeps (JOB_HISTORY_MAX, JOB_HISTORY_TTL_S) is `expired`.
Outputs are the files of the job's outcome (app.core.outcome), which the gateway holds in memory
(ComfyUI's output folder is emptied once they are read): output `{job id}.{n}` is file n.
"""

from __future__ import annotations

from typing import Any

from app.compat.v2.envelope import RETENTION, iso, now
from app.compat.v2.state import V2Job
from app.core.outcome import ResultFile
from app.core.status import JobProgress
from app.jobs.records import JobView

# The gateway's job statuses (app.core.status.STATUSES, every one) in v2's words.
STATUSES: dict[str, str] = {
    "queued": "queued",
    "running": "running",
    "succeeded": "succeeded",
    "failed": "failed",
    "interrupted": "canceled",
}
TERMINAL = frozenset({"succeeded", "failed", "canceled", "expired"})
LISTED = frozenset({"queued", "running", "succeeded", "canceling", "canceled", "failed", "expired"})


def status_of(record: JobView | None) -> str:
    return STATUSES[record.status] if record is not None else "expired"


def progress_of(record: JobView) -> dict[str, Any]:
    """The polled progress: the running node's step fraction (the proxy reports 0 always)."""
    progress = JobProgress.of(record.progress)
    return {"value": progress.fraction, "nodes_done": 0, "nodes_total": 0}


def live_progress(data: dict[str, Any]) -> dict[str, Any]:
    """A step of the event stream as the proxy translates ComfyUI's `progress`."""
    progress = JobProgress.of(data)
    return {
        "value": progress.fraction,
        "nodes_done": 0,
        "nodes_total": 0,
        "current_node": progress.node,
        "step": int(progress.step),
        "steps": int(progress.max),
    }


def job_error(body: dict[str, Any] | None) -> dict[str, Any]:
    """The gateway's error body as a v2 JobError: a node's failure is `node_execution_error`."""
    body = body or {}
    details = body.get("details") or {}
    if body.get("code") == "execution_failed":
        return {
            "code": "node_execution_error",
            "message": str(details.get("exception_message") or body.get("error", "")),
            "node_id": details.get("node_id"),
            "class_type": details.get("class_type"),
            "traceback": None,
        }
    return {
        "code": str(body.get("code", "execution_failed")),
        "message": str(body.get("error", "execution failed")),
        "node_id": None,
        "class_type": None,
        "traceback": None,
    }


def output_kind(content_type: str) -> str:
    kind = content_type.split("/")[0]
    return kind if kind in ("image", "video", "audio", "text") else "file"


def outputs(job: V2Job, record: JobView | None, base: str) -> list[dict[str, Any]]:
    """The Output objects of a succeeded job (none before, or once the gateway let it go)."""
    outcome = record.outcome if record is not None else None
    if outcome is None:
        return []
    expires = iso(now() + RETENTION)
    found = []
    for index, file in enumerate(outcome.files):
        output_id = f"{job.id}.{index}"
        found.append(
            {
                "node_id": file.node or "",
                "name": file.name,
                "type": output_kind(file.content_type),
                "content_type": file.content_type,
                "size_bytes": file.size,
                "id": output_id,
                "hash": None,  # "lazily computed", as the spec allows: never, here
                "url": f"{base}/api/v2/assets/{output_id}/content",
                "url_expires_at": expires,
                "job_id": job.id,
            }
        )
    return found


def output_file(record: JobView | None, index: int) -> ResultFile | None:
    """Output `index` of a job, while the gateway keeps its outcome (and its bytes)."""
    outcome = record.outcome if record is not None else None
    if outcome is None or not 0 <= index < len(outcome.files):
        return None
    file = outcome.files[index]
    if file.stored:
        return None  # uploaded: the gateway holds no bytes of it
    return file


def job_body(
    job: V2Job,
    record: JobView | None,
    base: str,
    *,
    status: str | None = None,
    queue_position: int | None = None,
) -> dict[str, Any]:
    """The Job object, keys in the proxy's order; `status` overrides the record's."""
    status = status or status_of(record)
    body: dict[str, Any] = {
        "id": job.id,
        "status": status,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at) if job.started_at else None,
        "completed_at": iso(job.completed_at) if job.completed_at else None,
        "expires_at": iso(job.created_at + RETENTION),
        "queue_position": queue_position if status == "queued" else None,
        "progress": progress_of(record) if record and status == "running" else None,
        "outputs": outputs(job, record, base) if status == "succeeded" else [],
        "error": job_error(record.error) if record and status == "failed" else None,
        "outputs_reused": False,
        "urls": {
            "self": f"{base}/api/v2/jobs/{job.id}",
            "events": f"{base}/api/v2/jobs/{job.id}/events",
            "cancel": f"{base}/api/v2/jobs/{job.id}/cancel",
        },
    }
    if job.metadata is not None:
        body["metadata"] = job.metadata
    if job.priority is not None:
        body["priority"] = job.priority
    return body
