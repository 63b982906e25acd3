"""The door's contract, the same in both job modes: one test, two job backends.

Every test runs twice: with LocalBackend (the gateway's runner on tests.unit.job_rig's fake
ComfyUI) and with FleetBackend (the same runner, and the fleet's queue in a real redis-server;
no worker pulls, so the fleet's jobs stay queued). The door (app.gateway.door) does not know
which it has: a key's job is its own (another key's id is a 404, the same as an unknown one),
an admin finds any key's job by id (409 while two keys have it, until `owner` names one), a
key's max_jobs is counted where the backend counts (429), a gateway not started refuses, the
queue runs higher priorities first (its read lists it so, with positions, every key's for an
admin and its own for a key), and a priority above a key's max_priority is a 403.
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

from app.core.addresses import AddressPolicy
from app.core.errors import ComfyUnavailable, Conflict, Forbidden, NotFound, TooManyJobs
from app.core.keys import Caller
from app.core.limits import KeyLimit
from app.core.metrics import GatewayMetrics
from app.core.options import JobOptions
from app.core.settings import load_settings
from app.fleet.fleet import Fleet
from app.gateway.backend import JobBackend
from app.gateway.door import JobDoor
from app.gateway.fleet_backend import FleetBackend
from app.gateway.local_backend import LocalBackend
from app.gateway.quotas import Quotas
from app.gateway.readiness import Readiness
from app.models.grants import Grants
from tests.redis_server import RedisServer
from tests.unit.job_rig import Rig, graph

# The rig serves the module (its HTTP clients take a while to make): one loop for every test.
pytestmark = pytest.mark.asyncio(loop_scope="module")

ALICE = Caller("alice", named=True)
BOB = Caller("bob", named=True)
CAROL = Caller("carol", named=True)
ADMIN = Caller("root", named=True, admin=True)


@dataclass
class House:
    """A door over one backend, and what the test needs to look behind it."""

    door: JobDoor
    backend: JobBackend
    rig: Rig
    lifecycle: Any  # started, stopping: what readiness reads of the lifecycle


@pytest_asyncio.fixture(params=["local", "fleet"], loop_scope="module")
async def house(
    request: pytest.FixtureRequest, pool_rigs: dict[int, Rig], redis_server: RedisServer
) -> AsyncIterator[House]:
    rig = pool_rigs[1].reset()
    runner = rig.runner
    pool: Any = SimpleNamespace(serving=True, comfy_queue=0, scheduler=runner.scheduler)
    fleet: Fleet | None = None
    backend: JobBackend
    if request.param == "local":
        backend = LocalBackend(runner, pool)
    else:
        settings = load_settings(queue_url=redis_server.url, queue_name=uuid.uuid4().hex[:12])
        addresses = AddressPolicy.from_settings(settings)
        fleet = Fleet(settings, runner, runner.scheduler, runner.sender, addresses)
        await fleet.store.ensure_group()
        backend = FleetBackend(fleet, runner)
    lifecycle = SimpleNamespace(started=True, stopping=False)
    readiness = Readiness(lifecycle, backend, pool, max_queue_depth=0)  # type: ignore[arg-type]
    limits = {"alice": KeyLimit(max_jobs=2), "carol": KeyLimit(max_priority=5)}
    quotas = Quotas(limits, backend, GatewayMetrics("test"))
    door = JobDoor(backend, readiness, quotas, Grants(load_settings()), runner)
    yield House(door, backend, rig, lifecycle)
    for job in list(runner.active.values()):  # a lone gateway's jobs run: end them
        rig.finish(job)
    await runner.drain(5)
    runner.outcome = None  # the fleet's worker hooked the runner
    if fleet is not None:
        await fleet.close(1)


async def start(house: House, request_id: str, caller: Caller) -> None:
    await house.door.start_job(request_id, graph(filename_prefix="door"), caller=caller)


async def ended(house: House, request_id: str, caller: Caller) -> None:
    """Until the job is no longer queued or running (its task takes a few steps to end)."""
    for _ in range(1000):
        if await house.door.running_job(request_id, caller) is None:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{request_id} still runs")


async def test_a_keys_job_is_its_own_and_another_keys_id_is_a_404(house: House) -> None:
    await start(house, "order", ALICE)
    await start(house, "order", BOB)  # the same id, another key: another job
    assert (await house.door.job("order", ALICE)).owner == "alice"
    assert (await house.door.job("order", BOB)).owner == "bob"
    with pytest.raises(NotFound) as unknown:
        await house.door.job("order", CAROL)
    assert unknown.value.message.startswith(f"{house.backend.who_knows} no job 'order'")
    with pytest.raises(NotFound):
        await house.door.interrupt("order", CAROL)  # nor may it cancel one
    assert await house.door.running_job("order", CAROL) is None


async def test_an_admin_finds_a_job_by_id_and_names_the_owner_when_two_have_it(
    house: House,
) -> None:
    await start(house, "only", ALICE)
    assert (await house.door.job("only", ADMIN)).owner == "alice"
    await start(house, "both", ALICE)
    await start(house, "both", BOB)
    with pytest.raises(Conflict) as twice:
        await house.door.job("both", ADMIN)
    assert twice.value.location == "owner"
    assert (await house.door.job("both", ADMIN, owner="bob")).owner == "bob"
    await house.door.interrupt("both", ADMIN, owner="bob")
    await ended(house, "both", BOB)
    assert (await house.door.job("both", ADMIN, owner="bob")).status == "interrupted"
    assert await house.door.running_job("both", ALICE) is not None  # alice's runs on


async def test_a_key_at_its_max_jobs_gets_a_429(house: House) -> None:
    await start(house, "one", ALICE)
    await start(house, "two", ALICE)
    with pytest.raises(TooManyJobs) as refused:
        await start(house, "three", ALICE)
    assert refused.value.status == 429 and refused.value.details["max_jobs"] == 2
    with pytest.raises(TooManyJobs):
        await house.door.quotas.check(ALICE)  # the passthrough's check counts the same jobs
    await start(house, "three", BOB)  # another key's jobs do not count


async def test_an_interrupted_job_is_no_longer_running(house: House) -> None:
    await start(house, "stop-me", ALICE)
    assert await house.door.running_job("stop-me", ALICE) is not None
    await house.door.interrupt("stop-me", ALICE)
    await ended(house, "stop-me", ALICE)
    assert (await house.door.job("stop-me", ALICE)).status == "interrupted"
    with pytest.raises(NotFound):
        await house.door.interrupt("stop-me", ALICE)


@pytest.mark.parametrize("phase", ["starting", "stopping"])
async def test_a_gateway_not_started_or_stopping_takes_no_job(house: House, phase: str) -> None:
    house.lifecycle.started = phase != "starting"
    house.lifecycle.stopping = phase == "stopping"
    with pytest.raises(ComfyUnavailable) as refused:
        await start(house, "early", ALICE)
    assert phase.replace("stopping", "shutting down") in refused.value.message
    with pytest.raises(NotFound):
        await house.door.job("early", ALICE)  # nothing of it was kept


async def test_the_queue_runs_higher_priority_first_and_shows_positions(house: House) -> None:
    """Behind a job that holds the instance (local: ComfyUI runs it; fleet: nobody takes it,
    so it waits too), jobs of priorities 0, 5, 0, 9 wait as 9, 5, 0, 0."""
    door = house.door
    await start(house, "busy", BOB)
    submitted = [("first-0", 0, BOB), ("five", 5, CAROL), ("second-0", 0, BOB), ("nine", 9, BOB)]
    for request_id, priority, caller in submitted:
        await door.start_job(request_id, graph(filename_prefix="door"),
                             JobOptions(priority=priority), caller=caller)  # fmt: skip
    queued = [job for job in await door.queued(ADMIN) if job.id != "busy"]
    assert [(job.id, job.priority) for job in queued] == [
        ("nine", 9), ("five", 5), ("first-0", 0), ("second-0", 0),
    ]  # fmt: skip
    assert [job.owner for job in queued] == ["bob", "carol", "bob", "bob"]
    assert all(job.waited_s >= 0 for job in queued)
    positions = [job.position for job in queued]
    assert positions == sorted(positions) and len(set(positions)) == 4
    for job in queued:  # /prompt/{id} and v2 read the same place
        caller = CAROL if job.owner == "carol" else BOB
        assert await door.queue_position(await door.job(job.id, caller)) == job.position
    # A key sees its own jobs only, at their places in the whole queue.
    assert [(job.id, job.position) for job in await door.queued(CAROL)] == [
        ("five", queued[1].position)
    ]


async def test_a_priority_above_the_keys_max_priority_is_a_403(house: House) -> None:
    door = house.door
    await door.start_job("at-cap", graph(), JobOptions(priority=5), caller=CAROL)
    with pytest.raises(Forbidden) as refused:
        await door.start_job("over-cap", graph(), JobOptions(priority=6), caller=CAROL)
    assert refused.value.location == "priority"
    assert refused.value.details == {"limit": "max_priority", "max_priority": 5}
    with pytest.raises(NotFound):
        await door.job("over-cap", CAROL)  # nothing of it was kept
    await door.start_job("admin", graph(), JobOptions(priority=100), caller=ADMIN)  # no cap
