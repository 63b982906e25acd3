"""A job's life on a lone gateway, in milliseconds: on tests.unit.job_rig (the gateway's own
runner, scheduler and trackers on a fake ComfyUI), in the style of arq's in-process worker.

Each test starts jobs, says how their prompts end (or that an instance died), and checks the
outcome each request learns, and that each job reached exactly one (the runner's metrics hook
counts them), with the capacity whole afterwards: start and place, a busy pool, FIFO and
affinity, a retry on another instance, a crash without one, timeouts, interrupts (queued and
running) and the shutdown's drain (app.gateway.lifecycle).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from app.core.errors import (
    ComfyUnavailable,
    ExecutionFailed,
    GatewayError,
    Interrupted,
    PromptTimeout,
)
from app.core.outcome import JobOutcome
from app.core.settings import load_settings
from app.gateway.lifecycle import Lifecycle
from app.gateway.local_backend import LocalBackend
from app.jobs.job import Job
from tests.unit.job_rig import Rig, graph

MakeRig = Callable[..., Rig]

# One rig per pool size serves the module, so every test here runs on the module's loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture
def rigs(pool_rigs: dict[int, Rig]) -> MakeRig:
    """rigs(instance_count, retries=, timeout_s=): the module's rig of that size, reset."""

    def make(count: int, **options: Any) -> Rig:
        return pool_rigs[count].reset(**options)

    return make


async def start(rig: Rig, request_id: str) -> Job:
    return await rig.runner.start(request_id, graph(filename_prefix=request_id), owner="alice")


async def outcome(job: Job) -> JobOutcome | GatewayError:
    """What the job's request learns: its response, or the error it raised."""
    assert job.task is not None
    try:
        return await asyncio.wait_for(asyncio.shield(job.task), 5)
    except GatewayError as e:
        return e


async def settled(rig: Rig) -> None:
    """Every job's task ended, and the capacity is whole again."""
    await rig.runner.drain(5)
    rig.assert_capacity_whole()


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until condition holds (tasks take a few steps; nothing sleeps)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


def placed_on(job: Job) -> int | None:
    return None if job.instance is None else job.instance.index


async def test_a_job_is_placed_submitted_and_answered(rigs: MakeRig) -> None:
    rig = rigs(1)
    job = await start(rig, "a")
    assert placed_on(job) == 0 and job.waiter is not None
    assert rig.comfy.prompts == [job.waiter.prompt_id]  # submitted before start() returned
    assert job.record.status == "queued"
    rig.finish(job)
    answer = await outcome(job)
    assert isinstance(answer, JobOutcome) and answer.id == "a"
    assert job.record.status == "succeeded"
    assert rig.outcomes.ended == [("a", "succeeded")]
    await settled(rig)


async def test_comfyuis_error_is_the_jobs_one_outcome(rigs: MakeRig) -> None:
    rig = rigs(1)
    job = await start(rig, "bad")
    instance, waiter = job.instance, job.waiter
    assert instance is not None and waiter is not None
    rig.fail(job)
    assert isinstance(await outcome(job), ExecutionFailed)
    late = {"prompt_id": waiter.prompt_id, "node": None}
    instance.tracker.handle("executing", late)  # a late event for the prompt changes nothing
    assert rig.outcomes.of("bad") == ["failed"]
    await settled(rig)


async def test_a_busy_pool_queues_a_job_until_an_instance_is_free(rigs: MakeRig) -> None:
    rig = rigs(2)
    first, second = await start(rig, "first"), await start(rig, "second")
    third = await start(rig, "third")
    assert {placed_on(first), placed_on(second)} == {0, 1}
    await until(lambda: rig.runner.scheduler.position(third.slot) == 0)
    assert placed_on(third) is None
    assert len(rig.comfy.prompts) == 2  # the third waits in the gateway, not in ComfyUI
    freed = placed_on(second)
    rig.finish(second)
    assert isinstance(await outcome(second), JobOutcome)
    await until(lambda: placed_on(third) == freed)  # the freed instance goes to the waiting job
    rig.finish(first)
    rig.finish(third)
    for job in (first, third):
        assert isinstance(await outcome(job), JobOutcome)
    assert sorted(rig.outcomes.ended) == [(n, "succeeded") for n in ("first", "second", "third")]
    await settled(rig)


async def test_waiting_jobs_run_in_order_on_the_instance_that_holds_their_model(
    rigs: MakeRig,
) -> None:
    rig = rigs(2)
    warm = await start(rig, "warm")
    rig.finish(warm)
    await outcome(warm)
    loaded = placed_on_last(rig)
    # Both free: the next job goes where its checkpoint is loaded already.
    jobs = [await start(rig, f"j{i}") for i in range(4)]
    assert placed_on(jobs[0]) == loaded
    await until(lambda: [rig.runner.scheduler.position(j.slot) for j in jobs[2:]] == [0, 1])
    for job in jobs:  # each one ends as soon as it runs: the queue drains first in, first out
        await until(lambda: job.instance is not None)  # noqa: B023
        rig.finish(job)
        await outcome(job)
    assert [rid for rid, _ in rig.outcomes.ended] == ["warm", "j0", "j1", "j2", "j3"]
    await settled(rig)


def placed_on_last(rig: Rig) -> int:
    """The instance that ran the last job (it holds that job's models now)."""
    return next(i.index for i in rig.instances if i.models)


async def test_a_job_whose_instance_dies_runs_again_on_another(rigs: MakeRig) -> None:
    rig = rigs(2, retries=1)
    job = await start(rig, "again")
    died = rig.instances[placed_on(job) or 0]
    rig.crash(died)
    # Placed again, then submitted again (over loopback: a few turns of the loop later).
    await until(lambda: job.instance is not None and job.instance is not died)
    await until(lambda: len(rig.comfy.prompts) == 2)
    assert job.attempts == 2
    assert job.record.status == "queued"  # told it was queued again, never that it ended
    rig.finish(job)
    assert isinstance(await outcome(job), JobOutcome)
    assert rig.outcomes.of("again") == ["succeeded"]
    await settled(rig)


@pytest.mark.parametrize(
    ("count", "retries"), [(1, 0), (2, 0), (2, 1)], ids=["lone", "pool", "retried-once"]
)
async def test_a_crash_past_the_retries_is_a_503(rigs: MakeRig, count: int, retries: int) -> None:
    rig = rigs(count, retries=retries)
    job = await start(rig, "lost")
    for attempt in range(1, retries + 2):
        await until(lambda: job.instance is not None and job.attempts == attempt)  # noqa: B023
        rig.crash(job.instance)  # type: ignore[arg-type]
    answer = await outcome(job)
    assert isinstance(answer, ComfyUnavailable) and answer.instance_lost
    assert job.attempts == retries + 1
    assert rig.outcomes.of("lost") == ["failed"]
    await settled(rig)


async def test_a_prompt_past_its_timeout_is_cancelled_in_comfyui(rigs: MakeRig) -> None:
    rig = rigs(1, timeout_s=0.05)
    job = await start(rig, "slow")
    assert isinstance(await outcome(job), PromptTimeout)
    assert job.waiter is None and rig.comfy.cancelled != []
    assert rig.outcomes.of("slow") == ["failed"]
    await settled(rig)


async def test_a_job_that_waits_past_its_timeout_never_reaches_comfyui(rigs: MakeRig) -> None:
    rig = rigs(2, timeout_s=0.05)
    rig.runner.timeout_s = None  # the two that hold the instances run on, untimed
    busy = [await start(rig, f"busy{i}") for i in range(2)]
    await until(lambda: all(job.task is not None for job in busy))
    await asyncio.sleep(0)  # each task has read the runner's timeout
    rig.runner.timeout_s = 0.05
    waiting = await start(rig, "waiting")
    assert isinstance(await outcome(waiting), PromptTimeout)
    assert len(rig.comfy.prompts) == 2 and rig.runner.scheduler.waiting == []
    for job in busy:
        rig.finish(job)
        assert isinstance(await outcome(job), JobOutcome)
    assert rig.outcomes.of("waiting") == ["failed"]
    await settled(rig)


async def test_interrupting_a_waiting_job_takes_it_out_of_the_queue(rigs: MakeRig) -> None:
    rig = rigs(2)
    busy = [await start(rig, f"busy{i}") for i in range(2)]
    waiting = await start(rig, "waiting")
    await until(lambda: rig.runner.scheduler.position(waiting.slot) == 0)
    await rig.runner.interrupt(("alice", "waiting"))
    assert isinstance(await outcome(waiting), Interrupted)
    assert rig.comfy.cancelled == [] and len(rig.comfy.prompts) == 2  # ComfyUI never saw it
    assert waiting.record.status == "interrupted"
    for job in busy:
        rig.finish(job)
        await outcome(job)
    assert rig.outcomes.of("waiting") == ["interrupted"]
    await settled(rig)


async def test_interrupting_a_running_job_cancels_its_prompt(rigs: MakeRig) -> None:
    rig = rigs(1)
    job = await start(rig, "running")
    assert job.waiter is not None
    prompt_id = job.waiter.prompt_id
    await rig.runner.interrupt(("alice", "running"))
    assert isinstance(await outcome(job), Interrupted)
    assert rig.comfy.cancelled == [prompt_id]
    assert rig.outcomes.of("running") == ["interrupted"]
    await settled(rig)


def lifecycle_of(rig: Rig, grace_s: float) -> Lifecycle:
    """The gateway's lifecycle over the rig's runner; the pool is the rig's instances."""
    pool: Any = SimpleNamespace(
        scheduler=rig.runner.scheduler,
        instances=rig.instances,
        fail_all=lambda error: [i.tracker.fail_all(error) for i in rig.instances],
        stop=lambda: asyncio.sleep(0),  # no process to stop
    )
    settings = load_settings(shutdown_grace_s=grace_s, webhook_timeout_s=1)
    backend = LocalBackend(rig.runner, pool)
    return Lifecycle(settings, pool, rig.runner, backend, rig.runner.sender, None, closing=[])


async def test_shutdown_lets_a_running_job_finish_within_the_grace_period(rigs: MakeRig) -> None:
    rig = rigs(1)
    job = await start(rig, "finishing")
    stopping = asyncio.create_task(lifecycle_of(rig, grace_s=5).stop())
    await asyncio.sleep(0.01)
    assert not stopping.done()  # draining: the job still runs
    rig.finish(job)
    await asyncio.wait_for(stopping, 5)
    assert isinstance(await outcome(job), JobOutcome)
    assert rig.outcomes.of("finishing") == ["succeeded"]
    await settled(rig)


async def test_shutdown_fails_the_jobs_left_after_the_grace_period(rigs: MakeRig) -> None:
    rig = rigs(2)
    running = [await start(rig, f"run{i}") for i in range(2)]
    waiting = await start(rig, "waiting")
    await until(lambda: rig.runner.scheduler.position(waiting.slot) == 0)
    lifecycle = lifecycle_of(rig, grace_s=0.05)
    await asyncio.wait_for(lifecycle.stop(), 5)
    assert lifecycle.stopping
    for job in [*running, waiting]:
        answer = await outcome(job)
        assert isinstance(answer, ComfyUnavailable) and "shut down" in answer.message
    assert sorted(rig.outcomes.ended) == [(n, "failed") for n in ("run0", "run1", "waiting")]
    await settled(rig)
