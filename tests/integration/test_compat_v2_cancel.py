"""Cancelling v2 jobs, differentially against comfy-api-proxy 0.1.6 (see test_compat_v2).

The gateway's cancel answers `canceled` once the job has stopped (it waits up to 2 s). The
proxy answers `canceling` for a running job and, for a pending one, `expired` on ComfyUI 0.33
(the prompt leaves the queue and never reaches the history); on ComfyUI 0.3.75, which has no
`/api/jobs/{id}/cancel`, its cancel does nothing. The tests assert what the proxy does on each
version and stop its jobs through ComfyUI itself when it does not.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.harness import Gateway, eventually
from tests.integration.test_compat_v2 import submit
from tests.integration.test_prompt import slow_graph
from tests.integration.v2_pair import Pair, paired, poll, poll_until

DIFFERS = {
    "progress": "canceled at once",
    "queue_position": "canceled at once",
    "started_at": "started_at",
    "completed_at": "completed_at",
}


@pytest.fixture(scope="module")
def pair(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with paired(gateway, tmp_path_factory.mktemp("proxy")) as both:
        yield both


def jobs_api(gateway: Gateway) -> bool:
    """Whether this ComfyUI has /api/jobs (0.33 does, 0.3.75 does not)."""
    return httpx.get(f"{gateway.comfy_url}/api/jobs", params={"limit": 1}).status_code == 200


def idle(gateway: Gateway) -> None:
    def empty() -> bool:
        queue = httpx.get(f"{gateway.comfy_url}/queue", timeout=5).json()
        return not queue["queue_running"] and not queue["queue_pending"]

    eventually(empty, timeout_s=60, what="ComfyUI's queue to empty")


def start(client: httpx.Client, seed: int, status: str) -> str:
    answer = client.post("/api/v2/jobs", json={"workflow": slow_graph(seed=seed)})
    assert answer.status_code == 201, answer.text
    job_id: str = answer.json()["id"]
    body, seen = poll_until(client, job_id, {status}, 60)
    assert body["status"] == status, seen
    return job_id


def cancel(client: httpx.Client, job_id: str) -> dict[str, Any]:
    answer = client.post(f"/api/v2/jobs/{job_id}/cancel")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def stop_in_comfyui(gateway: Gateway, pending: list[str]) -> None:
    """What the proxy's cancel does not do on 0.3.75: drop pending prompts, interrupt the rest."""
    httpx.post(f"{gateway.comfy_url}/queue", json={"delete": pending})
    httpx.post(f"{gateway.comfy_url}/interrupt")


def test_cancelling_a_running_job(pair: Pair, gateway: Gateway) -> None:
    idle(gateway)
    ours = cancel(pair.gateway, start(pair.gateway, 201, "running"))
    assert ours["status"] == "canceled" and ours["error"] is None and ours["outputs"] == []
    assert poll(pair.gateway, ours["id"])[0]["status"] == "canceled"
    idle(gateway)

    theirs = cancel(pair.proxy, start(pair.proxy, 202, "running"))
    # Theirs answers `canceling`, or, where ComfyUI has a jobs API and stopped the job before
    # the proxy read its status back (a busy machine), already `canceled`.
    assert theirs["status"] == "canceling" or (jobs_api(gateway) and theirs["status"] == "canceled")
    pair.same_shape(theirs, ours, DIFFERS)
    pair.seen.add("canceled at once")
    if jobs_api(gateway):
        final, seen = poll(pair.proxy, theirs["id"])
        assert final["status"] == "canceled", seen
    else:  # 0.3.75: the proxy's cancel had no effect; the job still runs
        assert pair.proxy.get(f"/api/v2/jobs/{theirs['id']}").json()["status"] == "running"
        stop_in_comfyui(gateway, [])
    idle(gateway)


def test_cancelling_a_pending_job(pair: Pair, gateway: Gateway) -> None:
    idle(gateway)
    running = start(pair.gateway, 203, "running")
    waiting = start(pair.gateway, 204, "queued")
    assert pair.gateway.get(f"/api/v2/jobs/{waiting}").json()["queue_position"] == 1
    ours = cancel(pair.gateway, waiting)
    assert ours["status"] == "canceled" and ours["queue_position"] is None
    assert cancel(pair.gateway, running)["status"] == "canceled"
    idle(gateway)

    their_running = start(pair.proxy, 205, "running")
    their_waiting = start(pair.proxy, 206, "queued")
    theirs = cancel(pair.proxy, their_waiting)
    pair.same_shape(theirs, ours, DIFFERS)
    if jobs_api(gateway):
        assert theirs["status"] == "expired"  # gone from the queue, never in the history
        cancel(pair.proxy, their_running)
    else:  # 0.3.75: no effect; it waits on
        assert theirs["status"] == "queued" and theirs["queue_position"] == 1
        stop_in_comfyui(gateway, [their_waiting])
    idle(gateway)


def test_cancelling_a_finished_job_changes_nothing(pair: Pair) -> None:
    workflow = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1,
                                                       "color": 5}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0],
                                                      "filename_prefix": "v2done"}},
    }  # fmt: skip
    ids = submit(pair, workflow)
    for client, job_id in zip(pair.clients, ids, strict=True):
        assert poll(client, job_id)[0]["status"] == "succeeded"
    theirs, ours = (cancel(c, i) for c, i in zip(pair.clients, ids, strict=True))
    assert theirs["status"] == ours["status"] == "succeeded"
    pair.same_shape(theirs, ours, DIFFERS)
