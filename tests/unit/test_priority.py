"""Priority: higher runs first, FIFO within a priority, an age bonus so nothing starves, in the
gateway's own queue (app.jobs.scheduler), in ComfyUI's (a lone instance: the `number` of each
prompt), and in a fleet's Redis queue (app.fleet.order); the range a request may give, and a
key's KEY_LIMITS max_priority.

The door's tests (tests/unit/test_door.py) check the same order, and the key cap, through both
job backends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from app.compat.v2.submission import extras_problem
from app.core.limits import parse_key_limits
from app.core.options import JobOptions
from app.core.settings import load_settings
from app.fleet.order import QUEUED
from app.fleet.store import FleetStore
from app.fleet.stream import GROUP
from app.jobs.job import Job
from app.jobs.scheduler import Scheduler
from app.main import create_app
from tests.redis_server import RedisServer
from tests.unit.job_rig import Rig, graph
from tests.unit.test_scheduler import Box

# Submitted while every instance is busy, in this order; they run as RUN_ORDER says.
SUBMITTED = [("first-0", 0), ("five", 5), ("second-0", 0), ("nine", 9)]
RUN_ORDER = ["nine", "five", "first-0", "second-0"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_gateways_queue_runs_higher_first_and_fifo_within_a_priority() -> None:
    box = Box(0)
    scheduler = Scheduler([box], one_at_a_time=True)
    assert scheduler.try_place("busy", frozenset()) is box
    tasks = [
        asyncio.create_task(scheduler.place(name, frozenset(), priority=priority))
        for name, priority in SUBMITTED
    ]
    await asyncio.sleep(0)
    assert [scheduler.position(name) for name in RUN_ORDER] == [0, 1, 2, 3]
    assert [entry.priority for entry in scheduler.waiting] == [9, 5, 0, 0]
    order = []
    for _ in SUBMITTED:
        scheduler.release(box, next(iter(box.jobs)))
        order.append(next(iter(box.jobs)))
    assert order == RUN_ORDER
    await asyncio.gather(*tasks)


async def test_the_age_bonus_lets_an_old_job_pass_newer_higher_ones() -> None:
    """With QUEUE_AGE_STEP_S 10, a job gains 1 per 10 s waited: a priority-0 job queued at t
    passes priority-5 jobs queued after t + 50 s, and not those queued before."""
    clock, box = Clock(), Box(0)
    scheduler = Scheduler([box], one_at_a_time=True, age_step_s=10, clock=clock)
    assert scheduler.try_place("busy", frozenset()) is box
    tasks = [asyncio.create_task(scheduler.place("old-0", frozenset(), priority=0))]
    await asyncio.sleep(0)
    for step, name in enumerate(["soon-5", "late-5", "later-5"]):
        clock.now += 40 if step == 0 else 20  # at +40 s, +60 s, +80 s
        tasks.append(asyncio.create_task(scheduler.place(name, frozenset(), priority=5)))
        await asyncio.sleep(0)
    assert [entry.request_id for entry in scheduler.waiting] == [
        "soon-5", "old-0", "late-5", "later-5",
    ]  # fmt: skip
    # A stream of new higher jobs keeps coming: the old one still goes next.
    scheduler.release(box, "busy")
    assert box.jobs == {"soon-5"}
    clock.now += 30
    tasks.append(asyncio.create_task(scheduler.place("newest-5", frozenset(), priority=5)))
    await asyncio.sleep(0)
    assert scheduler.position("old-0") == 0
    scheduler.release(box, "soon-5")
    assert box.jobs == {"old-0"}
    scheduler.fail_waiting(RuntimeError("done"))  # type: ignore[arg-type]
    await asyncio.gather(*tasks, return_exceptions=True)


# -- the runner, on a fake ComfyUI ----------------------------------------------------------------
pytestmark = pytest.mark.asyncio(loop_scope="module")


async def start(rig: Rig, request_id: str, priority: int = 0) -> Job:
    return await rig.runner.start(
        request_id, graph(filename_prefix=request_id), JobOptions(priority=priority), owner="al"
    )


async def next_placed(jobs: dict[str, Job], seen: list[str]) -> str:
    """The one job placed on an instance since `seen` were."""
    for _ in range(1000):
        placed = [name for name, job in jobs.items() if job.waiter and name not in seen]
        if placed:
            assert len(placed) == 1, placed
            seen.append(placed[0])
            return placed[0]
        await asyncio.sleep(0)
    raise AssertionError("no job was placed")


async def test_a_busy_pool_runs_the_waiting_jobs_by_priority(pool_rigs: dict[int, Rig]) -> None:
    rig = pool_rigs[2].reset()
    busy = [await start(rig, f"busy-{n}") for n in range(2)]
    jobs = {name: await start(rig, name, priority) for name, priority in SUBMITTED}
    for _ in range(1000):  # each job's own task queues it
        if len(rig.runner.scheduler.waiting) == len(jobs):
            break
        await asyncio.sleep(0)
    assert all(job.waiter is None for job in jobs.values())  # both instances are busy
    order: list[str] = []
    for done in busy:  # each job that ends frees an instance for the next waiting one
        rig.finish(done)
        await next_placed(jobs, order)
    for name in RUN_ORDER:
        rig.finish(jobs[name])
        if len(order) < len(jobs):
            await next_placed(jobs, order)
    assert order == RUN_ORDER
    await asyncio.gather(*(job.task for job in [*busy, *jobs.values()]))  # type: ignore[misc]
    # ComfyUI was sent the busy pair, then the waiting jobs by priority.
    assert rig.comfy.prompts[2:] == [jobs[name].record.prompt_id for name in RUN_ORDER]


async def test_a_lone_instance_gets_each_jobs_rank_as_comfyuis_number(
    pool_rigs: dict[int, Rig],
) -> None:
    """A lone instance takes jobs at once: ComfyUI's queue (lowest `number` first) orders them,
    and the gateway reads its queue in that order for the positions."""
    rig = pool_rigs[1].reset()
    busy = await start(rig, "busy")
    jobs = {name: await start(rig, name, priority) for name, priority in SUBMITTED}
    numbers = {name: rig.comfy.numbers[job.record.prompt_id] for name, job in jobs.items()}
    assert sorted(numbers, key=numbers.__getitem__) == RUN_ORDER
    _, pending = await rig.instances[0].client.queue()
    assert pending == [jobs[name].record.prompt_id for name in RUN_ORDER]
    for job in [busy, *jobs.values()]:
        rig.finish(job)
    await asyncio.gather(busy.task, *(job.task for job in jobs.values()))  # type: ignore[misc]


# -- the fleet's queue, in a real redis-server --------------------------------------------------
@pytest_asyncio.fixture(loop_scope="module")
async def fleet_store(
    redis_server: RedisServer, request: pytest.FixtureRequest
) -> AsyncIterator[FleetStore]:
    store = FleetStore(redis_server.url, f"p-{request.node.name}", ttl_s=60)
    await store.ensure_group()
    yield store
    await store.aclose()


def spec(key: str) -> dict[str, object]:
    return {"id": key, "owner": None, "graph": {}, "options": {}, "workflow": "prompt"}


async def test_the_fleets_queue_runs_higher_first_across_gateways(
    fleet_store: FleetStore,
) -> None:
    store = fleet_store
    for name, priority in SUBMITTED:
        assert await store.enqueue(name, spec(name), {"id": name}, priority=priority)
    assert [await store.position(name) for name in RUN_ORDER] == [0, 1, 2, 3]
    assert [(key, priority) for key, priority, _ in await store.queued(10)] == [
        ("nine", 9), ("five", 5), ("first-0", 0), ("second-0", 0),
    ]  # fmt: skip
    # Two gateways take turns: each takes the job that goes next, whoever asks.
    taken = [await store.pull(f"gateway-{n % 2}") for n in range(4)]
    assert [pulled.key for pulled in taken if pulled is not None] == RUN_ORDER
    assert await store.pull("gateway-0") is None
    assert await store.position("nine") is None  # taken: no longer waiting
    held = await store.redis.xpending_range(store.stream, GROUP, "-", "+", 10)
    assert sorted(entry["consumer"] for entry in held) == ["gateway-0"] * 2 + ["gateway-1"] * 2


async def test_the_fleets_age_bonus_counts_from_redis_own_clock(
    redis_server: RedisServer,
) -> None:
    """With QUEUE_AGE_STEP_S 1 ms, a priority-0 job queued 30 ms before a priority-9 one has
    gained more than 9 by then: it goes first."""
    store = FleetStore(redis_server.url, "p-age", ttl_s=60, age_step_s=0.001)
    await store.ensure_group()
    try:
        await store.enqueue("old", spec("old"), {"id": "old"}, priority=0)
        await asyncio.sleep(0.03)
        await store.enqueue("new", spec("new"), {"id": "new"}, priority=9)
        assert await store.position("old") == 0 and await store.position("new") == 1
    finally:
        await store.aclose()


async def test_a_message_queued_by_an_earlier_version_is_still_taken(
    fleet_store: FleetStore,
) -> None:
    """Before priority, a job's message waited in the stream for any gateway's XREADGROUP."""
    store = fleet_store
    await store.enqueue("new", spec("new"), {"id": "new"})
    legacy = await store.redis.xadd(store.stream, {"key": "legacy"})
    await store.redis.hset(store.job_key("legacy"), mapping={"status": "queued", "msg": legacy})
    first = await store.pull("gateway-0")
    second = await store.pull("gateway-0")
    assert first is not None and second is not None
    assert {first.key, second.key} == {"legacy", "new"}
    held = await store.redis.xpending_range(store.stream, GROUP, "-", "+", 10)
    assert all(entry["consumer"] != QUEUED for entry in held)


# -- the request's field and the key's cap ------------------------------------------------------
@pytest.mark.parametrize("value", [True, 1.5, "3", 101, -101, None])
async def test_a_priority_that_is_not_an_integer_in_range_is_a_located_400(value: object) -> None:
    app = create_app(load_settings())
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        body = {"prompt": graph(), "priority": value}
        response = await client.post("/prompt", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["location"] == "priority", response.text


async def test_key_limits_take_a_max_priority_and_refuse_one_out_of_range() -> None:
    limits = parse_key_limits('{"batch": {"max_priority": 0}, "vip": {"max_priority": 50}}')
    assert limits["batch"].max_priority == 0 and limits["vip"].max_priority == 50
    assert parse_key_limits('{"any": {"max_jobs": 1}}')["any"].max_priority is None
    with pytest.raises(ValueError, match=r"batch\.max_priority"):
        parse_key_limits('{"batch": {"max_priority": 500}}')


@pytest.mark.parametrize(
    ("priority", "problem"),
    [
        (9, None),
        (-100, None),
        (101, "between -100 and 100"),
        (True, "an integer"),
        (1.0, "an integer"),
    ],
)
async def test_v2s_priority_field_takes_the_same_range(
    priority: object, problem: str | None
) -> None:
    """Comfy's v2 field of the same name (the proxy takes -1e6..1e6 and ignores it)."""
    found = extras_problem({"workflow": {}, "priority": priority})
    if problem is None:
        assert found is None
    else:
        assert found is not None and found[:2] == (422, "invalid_request") and problem in found[2]
