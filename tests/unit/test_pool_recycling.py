"""Recycling (RECYCLE_AFTER_JOBS) on the pool's own objects, without a ComfyUI process: an
instance due for a restart takes no new job, finishes the ones it has, and is recycled once it
is idle; meanwhile the gateway still serves (the other instance, or the recycle's end, takes the
next job), so recycling fails no job."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from app.comfy.instance import ComfyInstance, InstanceState
from app.core.settings import load_settings
from app.gateway.pool import Pool


@dataclass
class Recycling:
    """A pool (RECYCLE_AFTER_JOBS=2) whose instances are up, and the recycles it asked for."""

    pool: Pool
    recycled: list[int] = field(default_factory=list)  # instance indexes, in order

    def place(self, request_id: str, only: ComfyInstance | None = None) -> ComfyInstance | None:
        return self.pool.scheduler.try_place(request_id, frozenset(), only=only)

    def ran(self, instance: ComfyInstance, request_id: str) -> None:
        """What the runner does when a job's attempt on the instance is over."""
        instance.jobs_since_start += 1
        self.pool.scheduler.release(instance, request_id)

    async def recycles_done(self) -> None:
        await asyncio.gather(*self.pool._recycles)


@pytest.fixture
async def pools() -> AsyncIterator[Callable[[int], Recycling]]:
    """make(instance_count): a Recycling; its instances' processes are never touched."""
    made: list[Recycling] = []

    def make(count: int) -> Recycling:
        recycling = Recycling(Pool(load_settings(comfyui_instances=count, recycle_after_jobs=2)))
        for instance in recycling.pool.instances:
            instance.process.proc = SimpleNamespace(returncode=None)  # as if ComfyUI ran
            instance.tracker.connected.set()
            instance.state = InstanceState.READY
            instance.process.recycle = recorder(recycling, instance.index)  # type: ignore[method-assign]
        made.append(recycling)
        return recycling

    yield make
    for recycling in made:
        for instance in recycling.pool.instances:
            await instance.client.aclose()


def recorder(recycling: Recycling, index: int) -> Callable[[], object]:
    async def recycle() -> None:
        recycling.recycled.append(index)

    return recycle


async def test_an_instance_is_recycled_after_its_jobs_and_the_other_serves(
    pools: Callable[[int], Recycling],
) -> None:
    recycling = pools(2)
    first, other = recycling.pool.instances
    for request_id in ("a", "b"):
        assert recycling.place(request_id, only=first) is first
        assert not first.draining  # not due before its second job is over
        recycling.ran(first, request_id)
    assert first.draining and not first.accepting
    await recycling.recycles_done()
    assert recycling.recycled == [0] and first.state is InstanceState.RECYCLING
    assert (
        recycling.pool.serving and recycling.place("c") is other
    )  # the next job goes to the other one


async def test_an_instance_due_finishes_the_jobs_it_has_before_it_is_recycled(
    pools: Callable[[int], Recycling],
) -> None:
    recycling = pools(1)  # one instance takes every job at once: ComfyUI queues them
    [instance] = recycling.pool.instances
    for request_id in ("a", "b", "c"):
        assert recycling.place(request_id) is instance
    recycling.ran(instance, "a")
    recycling.ran(instance, "b")  # due now, with "c" still on it
    assert instance.draining and not instance.accepting
    assert recycling.place("d") is None  # waits for the recycle
    assert recycling.pool.serving  # a draining instance with jobs still serves: "d" is accepted
    await recycling.recycles_done()
    assert recycling.recycled == []
    recycling.ran(instance, "c")
    await recycling.recycles_done()
    assert recycling.recycled == [0]
