"""A job's start gives back everything it took when any step fails, in any way.

On tests.unit.job_rig: the gateway's own runner, its real input files, model cache, scheduler,
history and trackers, on a fake ComfyUI (one instance, and a pool of two). Each test makes one
step of a start fail (a plain ValueError or RuntimeError, a GatewayError, a cancellation), then
shows the capacity whole: no job in `active` or `preparing`, no prompt id, no waiter, every
instance free, no model held, no input folder left; and a normal job then starts (and is
interrupted, giving everything back again)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from app.core.errors import ComfyUnavailable, GatewayError, Interrupted, PromptRejected
from app.jobs import start as start_module
from tests.unit.job_rig import CHECKPOINT, Rig, close_rig, graph, make_rig

# One rig serves the module (see `built`), so every test here runs on the module's loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", params=[1, 2], ids=["lone", "pool"], loop_scope="module")
async def built(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Rig]:
    """One rig per module and pool size (its HTTP clients take a while to make); each test
    leaves it as it found it, which the tests check."""
    rig = await make_rig(request.param, tmp_path_factory.mktemp("rig"))
    yield rig
    await close_rig(rig)


@pytest.fixture
def job_id() -> str:
    return f"job-{uuid.uuid4().hex[:8]}"  # the module's rig keeps every test's history


@pytest.fixture
def rig(built: Rig) -> Rig:
    built.comfy.prompts.clear()
    built.comfy.cancelled.clear()
    built.assert_capacity_whole()
    return built


async def started_then_interrupted(rig: Rig, request_id: str) -> None:
    """A normal job starts at once (its prompt reaches ComfyUI); interrupted, it gives all back."""
    runner = rig.runner
    job = await runner.start(request_id, graph(filename_prefix="ok"), owner="alice")
    assert job.waiter is not None and job.waiter.prompt_id in rig.comfy.prompts
    assert +runner.models.cache.holds == {f"checkpoints/{CHECKPOINT}": 1}
    assert len(list(rig.input_dir.iterdir())) == 1
    await runner.interrupt(("alice", request_id))
    assert job.task is not None
    with pytest.raises(Interrupted):
        await job.task
    await asyncio.sleep(0)  # the task's done callbacks
    rig.assert_capacity_whole()


KINDS: dict[str, Callable[[], BaseException]] = {
    "ValueError": lambda: ValueError("a bug"),
    "RuntimeError": lambda: RuntimeError("a bug"),
    "GatewayError": lambda: ComfyUnavailable("ComfyUI went away"),
}


def fail_with(error: BaseException) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise error

    return fail


def async_fail_with(error: BaseException) -> Callable[..., Any]:
    async def fail(*args: Any, **kwargs: Any) -> Any:
        raise error

    return fail


def after(real: Callable[..., Any], error: BaseException, *, calls: int = 1) -> Callable[..., Any]:
    """A step that works `calls - 1` times, then does its work and raises (a partial success)."""
    seen = 0

    async def step(*args: Any, **kwargs: Any) -> Any:
        nonlocal seen
        seen += 1
        result = await real(*args, **kwargs)
        if seen >= calls:
            raise error
        return result

    return step


def inject(rig: Rig, step: str, error: BaseException, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make one step of the next start raise `error`."""
    runner, first = rig.runner, rig.instances[0]
    if step == "check_graph":
        monkeypatch.setattr(start_module, "check_graph", fail_with(error))
    elif step == "destinations":
        monkeypatch.setattr(start_module, "check_destinations", async_fail_with(error))
    elif step == "models":  # inside the model store, with the hold taken
        monkeypatch.setattr(runner.models.cache, "touch", fail_with(error))
    elif step == "inputs":  # the second upload, after the first file landed
        monkeypatch.setattr(first.client, "upload", after(first.client.upload, error, calls=2))
    elif step == "queued_event":  # a listener of the job's events
        monkeypatch.setattr(start_module.JobRecord, "emit", fail_with(error))
    elif step == "placing":
        monkeypatch.setattr(runner.scheduler, "try_place", fail_with(error))
    elif step == "prefixes":
        monkeypatch.setattr(start_module, "unique_prefixes", fail_with(error))
    elif step == "watch":
        for instance in rig.instances:
            monkeypatch.setattr(instance.tracker, "watch", fail_with(error))
    elif step == "submit":
        for instance in rig.instances:
            monkeypatch.setattr(instance.client, "submit", async_fail_with(error))
    elif step == "submitted":  # ComfyUI has queued it
        for instance in rig.instances:
            monkeypatch.setattr(instance.tracker, "submitted", fail_with(error))
    elif step == "task":
        monkeypatch.setattr(runner, "_run", fail_with(error))
    elif step == "history":  # the task exists, ComfyUI has queued the prompt
        monkeypatch.setattr(runner.history, "add", fail_with(error))
    else:
        raise AssertionError(step)


STEPS = [
    "check_graph", "destinations", "models", "inputs", "queued_event", "placing", "prefixes",
    "watch", "submit", "submitted", "task", "history",
]  # fmt: skip
QUEUED_IN_COMFYUI = {"submitted", "task", "history"}  # steps after ComfyUI took the prompt


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("step", STEPS)
async def test_a_failed_start_gives_back_everything(
    rig: Rig, job_id: str, step: str, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    error = KINDS[kind]()
    with monkeypatch.context() as patch:
        inject(rig, step, error, patch)
        with pytest.raises(GatewayError) as failed:
            await rig.runner.start(job_id, graph(filename_prefix="x"), owner="alice")
    if isinstance(error, GatewayError):
        assert failed.value is error  # answered as it was raised
    else:
        assert failed.value.status == 500 and failed.value.__cause__ is error
        assert "nothing of it was kept" in failed.value.message
    rig.assert_capacity_whole()
    assert rig.runner.history.get(("alice", job_id)) is None
    if step in QUEUED_IN_COMFYUI:
        assert rig.comfy.cancelled == rig.comfy.prompts[-1:]  # taken back from ComfyUI's queue
    else:
        assert rig.comfy.cancelled == []
    await started_then_interrupted(rig, job_id)  # the same id: it is free again


@pytest.mark.parametrize("step", ["models", "inputs", "submit", "history"])
async def test_a_cancelled_start_gives_back_everything(
    rig: Rig, job_id: str, step: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cancellation (the gateway stopping, a client gone) is passed on as it is.
    with monkeypatch.context() as patch:
        inject(rig, step, asyncio.CancelledError(), patch)
        with pytest.raises(asyncio.CancelledError):
            await rig.runner.start(job_id, graph(filename_prefix="x"), owner="alice")
    rig.assert_capacity_whole()
    await started_then_interrupted(rig, job_id)


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), float("-inf"), "\ud800"],
    ids=["nan", "infinity", "-infinity", "lone-surrogate"],
)
async def test_a_graph_comfyui_cannot_be_sent_gives_back_everything(
    rig: Rig, job_id: str, value: Any
) -> None:
    # What the strict reader refuses, and check_graph too where it looks (a literal input),
    # reaching the runner deeper in a value (a workflow module may compute one): httpx cannot
    # encode it for ComfyUI. Before, the job stayed active for good.
    nested = graph(filename_prefix="x", options={"deep": [value]})
    with pytest.raises(GatewayError) as failed:
        await rig.runner.start(job_id, nested, owner="alice")
    assert failed.value.status == 500
    rig.assert_capacity_whole()
    assert rig.comfy.prompts == []
    await started_then_interrupted(rig, job_id)


async def test_comfyuis_refusal_gives_back_everything(
    rig: Rig, job_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusal = PromptRejected("ComfyUI refused it", location="prompt")
    with monkeypatch.context() as patch:
        inject(rig, "submit", refusal, patch)
        with pytest.raises(PromptRejected):
            await rig.runner.start(job_id, graph(filename_prefix="x"), owner="alice")
    rig.assert_capacity_whole()
    await started_then_interrupted(rig, job_id)
