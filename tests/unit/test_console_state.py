"""The operator page's state (app.console.state), in both job modes: one test, two backends.

As in test_door.py, every test runs with LocalBackend (the gateway's runner on tests.unit.
job_rig's fake ComfyUI) and with FleetBackend (the same runner, the fleet's queue in a real
redis-server; no worker pulls, so the fleet's jobs stay queued). The state lists every key's
queued jobs in order with their positions, the jobs running on this gateway with their
progress, the finished ones newest first with their errors, and the fleet's gateways.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio

from app.console.state import ConsoleState
from app.core.addresses import AddressPolicy
from app.core.settings import load_settings
from app.fleet.fleet import Fleet
from app.gateway.backend import JobBackend
from app.gateway.fleet_backend import FleetBackend
from app.gateway.local_backend import LocalBackend
from app.jobs.history import JobHistory
from app.jobs.job import Job
from tests.redis_server import RedisServer
from tests.unit.job_rig import Rig, graph

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Console:
    state: ConsoleState
    backend: JobBackend
    rig: Rig
    mode: str
    fleet: Fleet | None


class Instance:
    """What the console reads of a ComfyUI instance (app.comfy.instance.ComfyInstance)."""

    draining = False
    client = SimpleNamespace(devices=[{"name": "cuda:0 NVIDIA H100", "vram_total": 80 * 2**30}])

    def info(self) -> dict[str, Any]:
        return {"index": 0, "state": "ready", "gpu": None, "jobs": [], "jobs_run": 3,
                "restarts": 1, "comfyui_version": "0.3.75"}  # fmt: skip

    def rss_mb(self) -> float:
        return 1234.56


@pytest_asyncio.fixture(params=["local", "fleet"], loop_scope="module")
async def console(
    request: pytest.FixtureRequest, pool_rigs: dict[int, Rig], redis_server: RedisServer
) -> AsyncIterator[Console]:
    rig = pool_rigs[1].reset()
    runner = rig.runner
    runner.history = JobHistory(max_finished=100, ttl_s=600)  # no job of an earlier test
    fleet: Fleet | None = None
    backend: JobBackend
    if request.param == "local":
        pool: Any = SimpleNamespace(comfy_queue=0, scheduler=runner.scheduler)
        backend = LocalBackend(runner, pool)
    else:
        settings = load_settings(queue_url=redis_server.url, queue_name=uuid.uuid4().hex[:12])
        addresses = AddressPolicy.from_settings(settings)
        fleet = Fleet(settings, runner, runner.scheduler, runner.sender, addresses)
        await fleet.store.ensure_group()
        backend = FleetBackend(fleet, runner)
    gateway: Any = SimpleNamespace(
        version="test",
        backend=backend,
        jobs=runner,
        comfy=SimpleNamespace(version="0.3.75"),
        lifecycle=SimpleNamespace(started=True),
        readiness=SimpleNamespace(not_ready_reason=lambda: None, queue_depth=0),
        pool=SimpleNamespace(instances=[Instance()]),
        models=runner.models,
    )
    yield Console(ConsoleState(gateway), backend, rig, request.param, fleet)
    for job in list(runner.active.values()):
        rig.finish(job)
    await runner.drain(5)
    runner.outcome = None
    if fleet is not None:
        await fleet.close(1)


async def submit(console: Console, request_id: str, owner: str) -> None:
    await console.backend.submit(
        request_id, graph(), None, owner=owner, max_jobs=0, echo_input=None, workflow="prompt"
    )


async def fresh(console: Console) -> dict[str, Any]:
    console.state._built = None  # the test's steps come faster than FRESH_S
    return await console.state.read()


def job_of(console: Console, request_id: str) -> Job:
    return next(job for (_, rid), job in console.rig.runner.active.items() if rid == request_id)


async def until(check: Any) -> None:
    for _ in range(1000):
        if await check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("never happened")


async def test_every_keys_queued_jobs_are_listed_in_order_with_positions(console: Console) -> None:
    await submit(console, "first", "alice")
    await submit(console, "second", "bob")
    await submit(console, "third", "alice")
    state = await fresh(console)
    queue = [(job["position"], job["id"], job["owner"], job["priority"]) for job in state["queue"]]
    assert all(job["waited_s"] >= 0 for job in state["queue"])
    if console.mode == "local":  # the lone instance took the first: ComfyUI runs it
        assert queue == [(0, "second", "bob", 0), (1, "third", "alice", 0)]
        assert [job["id"] for job in state["running"]] == ["first"]
    else:  # no gateway pulls in this rig: all three wait in Redis
        assert queue == [
            (0, "first", "alice", 0),
            (1, "second", "bob", 0),
            (2, "third", "alice", 0),
        ]
        assert state["running"] == []
    assert state["finished"] == []


async def test_an_interrupted_job_leaves_the_queue_for_the_finished_with_its_error(
    console: Console,
) -> None:
    await submit(console, "runs", "carol")  # a lone instance takes the first at once
    await submit(console, "stays", "alice")
    await submit(console, "goes", "bob")
    record = await console.backend.record("goes", "bob")
    assert record is not None
    await console.backend.interrupt(record)

    async def listed() -> bool:
        return [job["id"] for job in (await fresh(console))["finished"]] == ["goes"]

    await until(listed)
    state = await fresh(console)
    assert [job["id"] for job in state["queue"]] == (
        ["stays"] if console.mode == "local" else ["runs", "stays"]
    )
    (ended,) = state["finished"]
    assert ended["status"] == "interrupted" and ended["owner"] == "bob"
    assert ended["error"]["code"] == "interrupted" and "node_id" not in ended["error"]
    assert "thumbnail" not in ended


async def test_instances_models_and_peers_are_read_from_memory(console: Console) -> None:
    state = await fresh(console)
    (instance,) = state["instances"]
    assert instance["rss_mb"] == 1234.6 and instance["jobs_run"] == 3
    assert instance["devices"] == [{"name": "cuda:0 NVIDIA H100", "vram_total": 80 * 2**30}]
    (model,) = state["models"]["models"]
    assert model["filename"] == "held.safetensors" and model["in_use"] == 0
    assert model["source"] == "http://x/"  # the operator sees every key's sources
    assert state["peers"] == []  # alone, or in a fleet whose queue no gateway read yet
    if console.fleet is not None:  # this gateway takes a job: the fleet knows it now
        await submit(console, "taken", "alice")
        consumer = console.fleet.worker.consumer
        assert await console.fleet.store.pull(consumer) is not None
        (peer,) = (await fresh(console))["peers"]
        assert (peer["name"], peer["holding"], peer["this"]) == (consumer, 1, True)


async def test_a_running_jobs_progress_and_a_failed_nodes_error(console: Console) -> None:
    if console.mode == "fleet":
        pytest.skip("no worker pulls in this rig: the fleet's jobs stay queued")
    await submit(console, "paints", "alice")
    job = job_of(console, "paints")
    assert job.waiter is not None
    tracker = job.instance.tracker if job.instance is not None else None
    assert tracker is not None
    prompt_id = job.waiter.prompt_id
    tracker.handle("execution_start", {"prompt_id": prompt_id})
    tracker.handle("progress", {"prompt_id": prompt_id, "value": 3, "max": 12, "node": "5"})
    state = await fresh(console)
    assert state["queue"] == []
    (running,) = state["running"]
    assert running["id"] == "paints" and running["status"] == "running"
    assert running["progress"] == {"node": "5", "step": 3, "max": 12, "percent": 25.0}
    console.rig.fail(job)

    async def failed() -> bool:
        return bool((await fresh(console))["finished"])

    await until(failed)
    (ended,) = (await fresh(console))["finished"]
    assert ended["status"] == "failed"
    error = ended["error"]
    assert (error["node_id"], error["class_type"]) == ("4", "SaveImage")
    assert (error["exception_type"], error["exception_message"]) == ("RuntimeError", "out of paint")


async def test_the_state_is_read_at_most_once_a_second(console: Console) -> None:
    before = await fresh(console)
    await submit(console, "later", "alice")
    assert await console.state.read() is before  # the same answer, not read again
