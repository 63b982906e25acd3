"""The scheduler's decisions on plain instance objects: who waits, who goes where, and when."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from app.core.errors import ComfyUnavailable, Interrupted
from app.jobs.scheduler import Scheduler


@dataclass(eq=False)
class Box:
    """An instance as the scheduler sees one."""

    index: int
    jobs: set[str] = field(default_factory=set)
    models: frozenset[str] = frozenset()
    idle_since: float = 0.0
    accepting: bool = True
    comfy_queue: int = 0


A, B = frozenset({"a.safetensors"}), frozenset({"b.safetensors"})


def pool(count: int = 2) -> tuple[Scheduler[Box], list[Box]]:
    boxes = [Box(i, idle_since=float(i)) for i in range(count)]
    return Scheduler(boxes), boxes


async def test_one_instance_takes_every_job_at_once() -> None:
    """ComfyUI's own queue orders them, as before there was a pool."""
    scheduler, [box] = pool(1)
    assert not scheduler.pooled
    assert [scheduler.try_place(f"j{n}", A) for n in range(3)] == [box, box, box]
    assert box.jobs == {"j0", "j1", "j2"}


async def test_one_instance_that_restarts_makes_jobs_wait() -> None:
    scheduler, [box] = pool(1)
    box.accepting = False
    assert scheduler.try_place("j1", A) is None
    waiting = asyncio.create_task(scheduler.place("j1", A))
    await asyncio.sleep(0)
    assert scheduler.position("j1") == 0 and not waiting.done()
    box.accepting = True
    scheduler.dispatch()
    assert await waiting is box


async def test_a_pool_runs_one_job_per_instance_and_queues_the_rest_in_order() -> None:
    scheduler, boxes = pool(2)
    first, second = scheduler.try_place("j1", A), scheduler.try_place("j2", A)
    assert {first, second} == set(boxes)
    assert scheduler.try_place("j3", A) is None
    third = asyncio.create_task(scheduler.place("j3", A))
    fourth = asyncio.create_task(scheduler.place("j4", A))
    await asyncio.sleep(0)
    assert (scheduler.position("j3"), scheduler.position("j4")) == (0, 1)
    assert first is not None
    scheduler.release(first, "j1")
    assert await third is first  # the older job gets the instance that freed up
    assert not fourth.done()
    assert scheduler.try_place("j5", A) is None  # someone waits: no jumping the queue
    assert second is not None
    scheduler.release(second, "j2")
    assert await fourth is second


async def test_a_job_prefers_the_instance_that_loaded_its_model() -> None:
    scheduler, (zero, one) = pool(2)
    zero.models, one.models = B, A
    assert scheduler.try_place("a-job", A) is one
    scheduler.release(one, "a-job")
    one.models = A
    assert scheduler.try_place("b-job", B) is zero


async def test_then_one_that_loaded_nothing_then_the_one_idle_longest() -> None:
    scheduler, (zero, one, two) = pool(3)
    zero.models, one.models = A, frozenset()
    two.models = B
    assert scheduler.try_place("c-job", frozenset({"c"})) is one
    scheduler.release(one, "c-job")
    one.models = frozenset({"c"})
    zero.idle_since, two.idle_since = 5.0, 1.0
    assert scheduler.try_place("d-job", frozenset({"d"})) is two


async def test_a_busy_comfyui_queue_is_not_free() -> None:
    """Prompts a passthrough client sent ComfyUI keep that instance busy."""
    scheduler, (zero, one) = pool(2)
    zero.comfy_queue = 1
    assert scheduler.try_place("j1", A) is one
    assert scheduler.try_place("j2", A) is None


async def test_a_pinned_job_waits_for_its_instance_and_lets_others_pass() -> None:
    scheduler, (zero, one) = pool(2)
    assert scheduler.try_place("busy", A, only=zero) is zero
    pinned = asyncio.create_task(scheduler.place("warmup-0", A, only=zero))
    other = asyncio.create_task(scheduler.place("j2", A))
    assert await other is one
    assert not pinned.done()
    scheduler.release(zero, "busy")
    assert await pinned is zero


async def test_a_retried_job_avoids_the_instance_it_died_on() -> None:
    scheduler, (zero, one) = pool(2)
    one.jobs.add("busy")
    retried = asyncio.create_task(scheduler.place("j1", A, avoid=zero))
    await asyncio.sleep(0)
    assert not retried.done()  # zero is free, but it is the one that died under the job
    scheduler.release(one, "busy")
    assert await retried is one


async def test_withdraw_and_fail_end_waiting_jobs() -> None:
    scheduler, (zero, one) = pool(2)
    zero.jobs.add("x")
    one.jobs.add("y")
    interrupted = asyncio.create_task(scheduler.place("j1", A))
    shut = asyncio.create_task(scheduler.place("j2", A))
    await asyncio.sleep(0)
    assert scheduler.withdraw("j1") and not scheduler.withdraw("nope")
    with pytest.raises(Interrupted):
        await interrupted
    scheduler.fail_waiting(ComfyUnavailable("the gateway shut down"))
    with pytest.raises(ComfyUnavailable):
        await shut
    assert scheduler.waiting == []


async def test_a_wait_that_times_out_gives_its_place_back() -> None:
    scheduler, (zero, one) = pool(2)
    zero.jobs.add("x")
    one.jobs.add("y")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(scheduler.place("late", A), 0.01)
    assert scheduler.waiting == []
    scheduler.release(zero, "x")
    assert zero.jobs == set()  # nobody took it on behalf of the job that left


async def test_every_release_is_told() -> None:
    scheduler, (zero, _) = pool(2)
    told: list[int] = []
    scheduler.after_release.append(lambda box: told.append(box.index))
    assert scheduler.try_place("j1", A) is zero
    scheduler.release(zero, "j1")
    assert told == [0]
