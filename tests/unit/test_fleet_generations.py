"""A reused id in a fleet runs once: an id's messages, records and webhooks are one-to-one by
construction across cancel, reuse, hand-back and takeover (a message acts only while it is its
job's current generation and its gateway holds it). And the finished jobs Redis keeps are bounded
in count and bytes, oldest first, never a queued or running one. Each interleaving is driven
step by step on a real redis-server (fleet_support), never by waiting for one to happen.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from app.core.addresses import AddressPolicy
from app.core.errors import NotFound, OutputsUnavailable
from app.core.settings import load_settings
from app.fleet.queue import FleetQueue
from app.fleet.records import RemoteRecord
from app.fleet.store import FleetStore, StillDelivering
from app.fleet.stream import NOT_HELD, NOTHING_TO_START
from app.jobs.records import JobEvent
from tests.integration.receiver import Receiver
from tests.redis_server import RedisServer
from tests.unit.fleet_support import RESULT, Node, nodes, spec, submit, terminal_events

INTERRUPTED = {"error": "stop", "code": "interrupted"}


@pytest.fixture
async def pair(redis_server: RedisServer, receiver: Receiver) -> AsyncIterator[list[Node]]:
    async with nodes(redis_server.url, receiver, 2) as made:
        yield made


async def cancel(store: FleetStore, key: str) -> object:
    return await store.cancel(key, {**INTERRUPTED, "status": 409}, {"id": key, **INTERRUPTED})


async def test_cancelled_while_queued_then_reused_the_id_runs_once(
    pair: list[Node], receiver: Receiver
) -> None:
    first, second = pair
    key = await submit(first.store, "again", receiver.url("/again/1"))
    assert await cancel(first.store, key) == spec("again", receiver.url("/again/1"))
    assert await first.store.redis.xlen(first.store.stream) == 0  # its message went with it
    await submit(first.store, "again")  # the same id, a new job
    for node in pair:  # each gateway pulls what it can and starts it
        pulled = await node.store.pull(node.worker.consumer)
        if pulled is not None:
            await node.start(pulled)
    assert first.runner.started + second.runner.started == ["again"]
    ran = first if first.runner.started else second
    ran.runner.end("again", RESULT)
    await ran.settle()
    assert await terminal_events(first.store, key) == ["complete"]
    assert (await first.store.state(key))["attempts"] == "1"
    assert first.idle() and second.idle()
    assert await first.store.redis.xlen(first.store.stream) == 0


async def test_a_job_cancelled_after_a_gateway_pulled_it_is_never_started(
    pair: list[Node], receiver: Receiver
) -> None:
    node, _ = pair
    key = await submit(node.store, "pulled", receiver.url("/pulled"))
    pulled = await node.store.pull(node.worker.consumer)
    assert pulled is not None
    assert await cancel(node.store, key)  # ended where the request landed: nobody started it
    assert await node.store.start(pulled, node.worker.consumer) == NOT_HELD
    await node.start(pulled)
    assert node.runner.started == []
    assert node.idle()
    assert (await node.store.state(key))["status"] == "interrupted"
    assert await node.store.redis.xlen(node.store.stream) == 0


async def test_a_message_left_by_a_gateway_that_died_after_the_end_does_not_start_the_reuse(
    pair: list[Node],
) -> None:
    """Gateway A ends a job and dies before it acknowledges; the id is used again; the old
    message, taken over, is dropped: only the new one starts the new job, once."""
    dead, alive = pair
    key = await submit(dead.store, "twice")
    old = await dead.store.pull(dead.worker.consumer)
    assert old is not None and await dead.store.start(old, dead.worker.consumer) == 1
    assert await dead.store.finish(old, "succeeded", "complete", RESULT)  # then it died
    await submit(alive.store, "twice")  # the id used again: a new generation
    taken = await alive.store.reclaim(alive.worker.consumer, idle_ms=0)
    assert taken is not None and taken.message_id == old.message_id
    await alive.start(taken)  # the old generation's message: acknowledged, nothing started
    assert alive.runner.started == []
    await alive.take()  # the new one
    assert alive.runner.started == ["twice"]
    alive.runner.end("twice", RESULT)
    await alive.settle()
    assert await terminal_events(alive.store, key) == ["complete"]
    assert (await alive.store.state(key))["attempts"] == "1"
    assert await alive.store.redis.xlen(alive.store.stream) == 0


async def test_a_reuse_waits_until_the_last_jobs_webhooks_went_out(
    pair: list[Node], receiver: Receiver
) -> None:
    """A gateway records an outcome and dies before its webhooks: the id cannot be used again
    until the gateway that takes the message over has sent them, once."""
    dead, alive = pair
    hook = receiver.url("/reuse-after-webhooks")
    key = await submit(dead.store, "hooked", hook)
    pulled = await dead.store.pull(dead.worker.consumer)
    assert pulled is not None and await dead.store.start(pulled, dead.worker.consumer) == 1
    assert await dead.store.finish(pulled, "succeeded", "complete", {"id": "hooked", **RESULT})
    with pytest.raises(StillDelivering):
        await alive.store.enqueue(key, spec("hooked"), {"id": "hooked"})
    await alive.take(reclaim=True)  # redelivers, then acknowledges
    assert [d.json()["event"] for d in receiver.deliveries("/reuse-after-webhooks")] == [
        "output.complete"
    ]
    assert await alive.store.enqueue(key, spec("hooked"), {"id": "hooked"})
    assert alive.runner.started == []


async def test_webhooks_taken_over_from_a_gateway_that_died_say_its_outputs_went_with_it(
    pair: list[Node], receiver: Receiver
) -> None:
    """Its files lay with it (not uploaded): a request that waits for the job, and the webhook,
    say so (naming that gateway), instead of failing half-way or hanging."""
    dead, alive = pair
    hook = receiver.url("/outputs-gone")
    key = await submit(dead.store, "gone", hook)
    pulled = await dead.store.pull(dead.worker.consumer)
    assert pulled is not None and await dead.store.start(pulled, dead.worker.consumer) == 1
    meta = {"name": "out.png", "size": 2, "url": "http://127.0.0.1:9/internal/fleet/files/t"}
    data = {"id": "gone", "filenames": ["out.png"], "files": [meta]}  # port 9: nobody there
    assert await dead.store.finish(pulled, "succeeded", "complete", data)
    queue = FleetQueue(alive.store, AddressPolicy.from_settings(load_settings()), alive.sender)
    with pytest.raises(OutputsUnavailable, match=r"127\.0\.0\.1:9\), and it cannot be reached"):
        await queue.outcome(key, pulled.message_id)  # a synchronous /prompt's answer
    await alive.take(reclaim=True)  # redelivers, then acknowledges
    [delivery] = receiver.deliveries("/outputs-gone")
    assert delivery.json()["event"] == "prompt.failed"
    assert delivery.json()["code"] == "outputs_unavailable"
    assert "http://127.0.0.1:9" in delivery.json()["error"]
    assert await alive.store.enqueue(key, spec("gone"), {"id": "gone"})


async def test_an_overtaken_gateway_neither_starts_nor_writes_to_the_job(pair: list[Node]) -> None:
    slow, fresh = pair
    key = await submit(slow.store, "overtaken")
    pulled = await slow.store.pull(slow.worker.consumer)
    assert pulled is not None
    assert await slow.store.start(pulled, slow.worker.consumer) == 1
    taken = await fresh.store.reclaim(fresh.worker.consumer, idle_ms=0)  # slow went quiet
    assert taken is not None
    assert await slow.store.start(pulled, slow.worker.consumer) == NOT_HELD
    assert await fresh.store.start(taken, fresh.worker.consumer) == 2
    late = JobEvent(0, "progress", {"value": 9})
    await slow.store.append_all(pulled, slow.worker.consumer, [(late, "running", None)])
    await fresh.store.append_all(taken, fresh.worker.consumer, [(late, "running", None)])
    events = await fresh.store.redis.xrange(fresh.store.events_key(key))
    assert [f["type"] for _, f in events] == ["queued", "progress"]  # the fresh one's only
    assert await fresh.store.heartbeat(slow.worker.consumer, [pulled.message_id]) == [
        pulled.message_id
    ]


async def test_an_earlier_generation_cannot_end_or_mark_the_current_one(
    pair: list[Node],
) -> None:
    node, _ = pair
    key = await submit(node.store, "gen")
    old = await node.store.pull(node.worker.consumer)
    assert old is not None
    assert await node.store.finish(old, "succeeded", "complete", RESULT)
    await submit(node.store, "gen")
    assert not await node.store.finish(old, "failed", "failed", {"id": "gen"}, {"error": "x"})
    await node.store.ack(old)  # the old message goes; the new record is not marked delivered
    state = await node.store.state(key)
    assert (state["status"], "delivered" in state, "done" in state) == ("queued", False, False)
    assert await node.store.start(old, node.worker.consumer) == NOT_HELD


async def test_a_job_handed_back_is_a_new_generation(pair: list[Node]) -> None:
    leaving, other = pair
    key = await submit(leaving.store, "handed")
    pulled = await leaving.store.pull(leaving.worker.consumer)
    assert pulled is not None
    assert await leaving.store.start(pulled, leaving.worker.consumer) == 1
    assert not await other.store.release(pulled, other.worker.consumer)  # not other's to give
    assert await leaving.store.release(pulled, leaving.worker.consumer)
    state = await leaving.store.state(key)
    assert state["msg"] != pulled.message_id and state["status"] == "queued"
    assert "gateway" not in state  # queued again: a cancel now ends it where it lands
    again = await other.store.pull(other.worker.consumer)
    assert again is not None and again.message_id == state["msg"]
    assert await other.store.start(again, other.worker.consumer) == 2
    await leaving.store.ack(pulled)  # a late acknowledgement of the old message marks nothing
    assert "delivered" not in await leaving.store.state(key)
    assert await leaving.store.finish(again, "succeeded", "complete", RESULT)
    assert await leaving.store.start(again, other.worker.consumer) == NOTHING_TO_START


# -- the finished jobs Redis keeps ---------------------------------------------------------------
@pytest.fixture
async def small(redis_server: RedisServer) -> AsyncIterator[FleetStore]:
    """A fleet that keeps 3 finished jobs, 10 000 bytes of them."""
    name = f"h-{uuid.uuid4().hex[:12]}"
    store = FleetStore(redis_server.url, name, ttl_s=60, history_max=3, history_max_bytes=10_000)
    await store.ensure_group()
    yield store
    await store.aclose()


async def finish_one(store: FleetStore, request_id: str, result: dict[str, object]) -> str:
    key = await submit(store, request_id)
    pulled = await store.pull("gateway-1")
    assert pulled is not None and pulled.key == key
    assert await store.finish(pulled, "succeeded", "complete", result)
    await store.ack(pulled)
    return key


async def test_past_the_count_the_oldest_finished_job_is_dropped_first(small: FleetStore) -> None:
    running = await submit(small, "running")
    await small.pull("gateway-1")
    kept = [await finish_one(small, f"done-{n}", RESULT) for n in range(5)]
    assert [bool(await small.state(k)) for k in kept] == [False, False, True, True, True]
    assert [await small.last_event(k) is not None for k in kept] == [False, False, True, True, True]
    assert (await small.state(running))["status"] == "queued"  # never a running one
    assert await small.redis.zcard(small.history[0]) == 3


async def test_past_the_bytes_the_oldest_finished_jobs_are_dropped_first(small: FleetStore) -> None:
    big = {"images": ["x" * 4000], "filenames": ["a.png"]}
    keys = [await finish_one(small, f"big-{n}", big) for n in range(3)]
    assert [bool(await small.state(k)) for k in keys] == [False, True, True]  # 8 KB of 10
    total = int(await small.redis.get(small.history[2]))
    assert 8000 < total <= 10_000
    huge = {"images": ["x" * 20_000], "filenames": ["a.png"]}
    alone = await finish_one(small, "huge", huge)  # larger than the bound: kept, alone
    assert await small.state(alone)
    assert [bool(await small.state(k)) for k in keys] == [False, False, False]


async def test_a_reused_id_leaves_the_kept_ones_and_counts_again(small: FleetStore) -> None:
    key = await finish_one(small, "reused", RESULT)
    assert await small.redis.zscore(small.history[0], key) is not None
    await submit(small, "reused")  # queued again: not a finished job any more
    assert await small.redis.zscore(small.history[0], key) is None
    assert await small.redis.hget(small.history[1], key) is None
    assert int(await small.redis.get(small.history[2])) == 0
    taken = await small.pull("gateway-2")
    assert taken is not None and taken.key == key  # it runs, while three others end
    [await finish_one(small, f"other-{n}", RESULT) for n in range(3)]
    assert (await small.state(key))["status"] == "queued"  # still there: never dropped


async def test_a_job_no_longer_kept_reads_as_unknown(small: FleetStore) -> None:
    first = await finish_one(small, "first", RESULT)
    [await finish_one(small, f"later-{n}", RESULT) for n in range(3)]
    assert await RemoteRecord.load(small, first) is None  # the door answers 404


async def test_a_reader_of_a_job_never_takes_a_later_job_of_its_id_for_it(
    pair: list[Node],
) -> None:
    """A waiting request, and an event stream, of a job that ended: the id used again before
    they read the end gets them no answer of the later job's."""
    node, _ = pair
    queue = FleetQueue(node.store, AddressPolicy.from_settings(load_settings()), node.sender)
    key = await submit(node.store, "read")
    first = await node.store.pull(node.worker.consumer)
    assert first is not None
    assert await node.store.finish(first, "succeeded", "complete", {"id": "read", **RESULT})
    ended = await RemoteRecord.load(node.store, key)  # read before the id is used again
    assert ended is not None and ended.generation == first.message_id
    await submit(node.store, "read")  # a later job of the id, queued
    with pytest.raises(NotFound, match="replaced"):
        await asyncio.wait_for(queue.outcome(key, first.message_id), 10)
    assert [e async for e in ended.follow()] == []  # its stream ends, the later one's unseen
    later = await RemoteRecord.load(node.store, key)
    assert later is not None and later.generation != first.message_id
    events = later.follow()
    assert (await anext(events)).type == "queued"  # the later job's own stream, from its start
    await events.aclose()
