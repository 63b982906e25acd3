"""A fleet worker's start of a pulled job gives everything back, whatever fails and wherever: a
failure (a plain exception, a GatewayError, a Redis error) injected at each step leaves no job
starting or running on the gateway and no instance slot held, and the job ends exactly once
(with a reported failure, or taken over by another gateway when Redis failed under the start);
then the next job runs. Real redis-server, real webhook receiver, a fake runner (fleet_support).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from app.core.errors import GatewayError
from app.fleet.stream import Pulled
from tests.integration.receiver import Receiver
from tests.redis_server import RedisServer
from tests.unit.fleet_support import RESULT, Node, failing_once, nodes, submit, terminal_events

STEPS = ["pull", "state", "start", "takeover", "runner", "events", "interrupt", "outcome", "ack"]
ERRORS: dict[str, BaseException] = {
    "exception": RuntimeError("injected"),
    "gateway_error": GatewayError("injected"),
    "redis_error": RedisConnectionError("injected"),
}
CASES = [(s, e) for s in STEPS for e in ERRORS if s not in ("pull", "ack") or e == "redis_error"]


@pytest.fixture
async def pair(redis_server: RedisServer, receiver: Receiver) -> AsyncIterator[list[Node]]:
    async with nodes(redis_server.url, receiver, 2) as made:
        yield made


def expected(step: str, error: str) -> str:
    """How a job ends when this step of its start fails so."""
    if error == "redis_error":
        if step in ("pull", "state", "start", "takeover"):
            return "taken over"  # left pending: Redis failed under the start
        return "failed" if step == "runner" else "succeeded"  # the rest is retried
    return "succeeded" if step in ("events", "interrupt") else "failed"


def inject(node: Node, step: str, error: BaseException, monkeypatch: pytest.MonkeyPatch) -> None:
    store, runner, worker = node.store, node.runner, node.worker
    if step in ("state", "start"):  # a pull reads and starts the job in its script; a
        pull = store.pull  # takeover does both apart, as here

        async def pull_apart(consumer: str, max_attempts: int = 0) -> Pulled | None:
            pulled = await pull(consumer)  # starting nothing
            return None if pulled is None else dataclasses.replace(pulled, state=None)

        monkeypatch.setattr(store, "pull", pull_apart)
    if step == "pull":  # its script ran (the job claimed and started here); its answer was lost
        take = store._take

        async def answer_lost(consumer: str, max_attempts: int) -> list[Any]:
            await take(consumer, max_attempts)
            raise error

        monkeypatch.setattr(store, "_take", answer_lost)
    elif step in ("state", "start", "outcome", "ack"):
        method = {"outcome": "finish"}.get(step, step)
        monkeypatch.setattr(store, method, failing_once(getattr(store, method), error))
    elif step in ("takeover", "events"):  # the takeover's `queued` event, or the job's first
        monkeypatch.setattr(store, "append_all", failing_once(store.append_all, error))
    elif step == "runner":
        runner.fail = error
    elif step == "interrupt":  # interrupted while its inputs are fetched; the interrupt fails
        runner.fail_interrupt = error
        real_start = runner.start

        async def start(request_id: str, *args: Any, **kwargs: Any) -> Any:
            await worker._interrupt(request_id)
            return await real_start(request_id, *args, **kwargs)

        monkeypatch.setattr(runner, "start", start)


@pytest.mark.parametrize(("step", "error"), CASES)
async def test_a_failure_at_any_step_of_a_fleet_start_gives_everything_back(
    pair: list[Node],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    step: str,
    error: str,
) -> None:
    node, other = pair
    hook = receiver.url(f"/start/{step}/{error}")
    key = await submit(node.store, "job-1", hook)
    if step == "takeover":  # a gateway started it before and died: this is its second start
        await node.store.redis.hset(node.store.job_key(key), "attempts", 1)
    inject(node, step, ERRORS[error], monkeypatch)
    if step == "pull":  # the worker's pull loop logs it and pulls again later
        with pytest.raises(RedisConnectionError):
            await node.take()
    else:
        await node.take()
    if node.worker.running:  # it runs: it ends as the runner says
        node.runner.end("job-1", RESULT)
        await node.settle()
    assert node.idle(), (node.worker.starting, node.worker.running)
    ending = expected(step, error)
    if ending == "taken over":
        state = await node.store.state(key)
        assert "done" not in state  # not ended: its message waits for another gateway
        assert (await node.store.redis.xpending(node.store.stream, "gateways"))["pending"] == 1
        await other.take(reclaim=True)
        other.runner.end("job-1", RESULT)
        await other.settle()
        assert other.idle()
        ending = "succeeded"
    kind = {"succeeded": "complete", "failed": "failed"}[ending]
    assert await terminal_events(node.store, key) == [kind]
    assert (await node.store.state(key))["status"] == ending
    delivered = [d.json()["event"] for d in receiver.deliveries(f"/start/{step}/{error}")]
    assert delivered == ["output.complete" if ending == "succeeded" else "prompt.failed"]
    assert await node.store.redis.xlen(node.store.stream) == 0  # every message acknowledged
    # And the gateway takes the next job at once.
    monkeypatch.undo()
    next_key = await submit(node.store, "job-2")
    await node.take()
    node.runner.end("job-2", RESULT)
    await node.settle()
    assert await terminal_events(node.store, next_key) == ["complete"]
    assert node.idle()


async def test_a_runner_refusal_ends_the_job_with_its_own_error(
    pair: list[Node], receiver: Receiver
) -> None:
    node, _ = pair
    key = await submit(node.store, "refused-1", receiver.url("/refused"))
    node.runner.fail = GatewayError("ComfyUI refused the graph")
    await node.take()
    assert node.idle()
    record = await node.store.state(key)
    assert record["status"] == "failed"
    [delivered] = receiver.deliveries("/refused")
    assert delivered.json()["error"] == "ComfyUI refused the graph"


@pytest.mark.parametrize("hooked", [False, True], ids=["no-webhook", "webhook"])
async def test_a_job_without_webhooks_is_acknowledged_with_its_outcome(
    pair: list[Node], receiver: Receiver, hooked: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = pair[0]
    acks: list[str] = []
    ack = node.store.ack

    async def counted(pulled: Pulled) -> None:
        acks.append(pulled.key)
        await ack(pulled)

    monkeypatch.setattr(node.store, "ack", counted)
    hook = receiver.url(f"/acked/{hooked}") if hooked else None
    key = await submit(node.store, f"acked-{hooked}", hook)
    await node.take()
    node.runner.end(f"acked-{hooked}", RESULT)
    await node.settle()
    assert await terminal_events(node.store, key) == ["complete"]
    assert await node.store.redis.xlen(node.store.stream) == 0  # acknowledged, and gone
    assert (await node.store.state(key))["delivered"] == "1"
    # With a webhook, once it went out, in a round trip of its own; without, in FINISH's.
    assert acks == ([key] if hooked else [])
    delivered = [d.json()["event"] for d in receiver.deliveries(f"/acked/{hooked}")]
    assert delivered == (["output.complete"] if hooked else [])
