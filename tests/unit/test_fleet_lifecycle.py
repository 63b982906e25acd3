"""A fleet job's life, in milliseconds: the gateway's own FleetWorker and JobRunner on a fake
ComfyUI (tests.unit.job_rig), against a real redis-server (tests.unit.fleet_support's nodes).

A job is pulled, run and its outcome recorded once; when the gateway that runs it dies, another
takes it over; when one that only went quiet ends it later, the first outcome stands; a job
whose gateways keep dying ends failed after JOB_MAX_ATTEMPTS starts. Every case ends with
exactly one terminal event in Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from itertools import pairwise

import pytest
import pytest_asyncio

from app.comfy.previews import PreviewFrame
from app.core.addresses import AddressPolicy
from app.core.errors import ComfyUnavailable, Conflict, GatewayError
from app.core.options import JobOptions
from app.core.outcome import JobOutcome
from app.core.settings import load_settings
from app.fleet import next_job, scripts, sink
from app.fleet.queue import FleetJob, FleetQueue
from app.fleet.records import RemoteRecord
from app.fleet.stream import GROUP
from app.jobs.job import Job
from tests.integration.receiver import Receiver
from tests.redis_server import RedisServer
from tests.unit.fleet_support import Node, nodes, submit, terminal_events
from tests.unit.job_rig import Rig, close_rig, graph, make_rig
from tests.unit.test_tracker import eventually

# The rigs serve the module (their HTTP clients take a while to make), so every test here runs on
# the module's loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")
Gateways = Callable[[int], Awaitable[list[Node]]]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rigs(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[list[Rig]]:
    """Four gateways' runners, each on one fake ComfyUI instance, one job at a time (a fleet's)."""
    made = [await make_rig(1, tmp_path_factory.mktemp("gw"), one_at_a_time=True) for _ in range(4)]
    yield made
    for rig in made:
        await close_rig(rig)


@pytest_asyncio.fixture(loop_scope="module")
async def gateways(
    redis_server: RedisServer, receiver: Receiver, rigs: list[Rig]
) -> AsyncIterator[Gateways]:
    """make(count): that many gateways of one fleet, on the module's rigs (reset)."""
    async with AsyncExitStack() as stack:

        async def make(count: int) -> list[Node]:
            used = [rig.reset() for rig in rigs[:count]]
            return await stack.enter_async_context(nodes(redis_server.url, receiver, count, used))

        yield make


@pytest_asyncio.fixture(loop_scope="module")
async def pair(gateways: Gateways) -> list[Node]:
    return await gateways(2)


def running_job(node: Node) -> Job:
    """The one fleet job this gateway runs."""
    [entry] = node.worker.running.values()
    return entry.job


async def finished(node: Node, job: Job) -> None:
    """The job ended (ComfyUI is done with it), and the worker acknowledged it."""
    assert node.rig is not None
    node.rig.finish(job)
    assert job.task is not None
    await job.task
    await node.settle()


async def dies(node: Node, job: Job) -> None:
    """The gateway that ran the job, already overtaken (it stopped heartbeating), dies: it
    records nothing more (its worker abandons its jobs, as past a shutdown's grace period) and
    its ComfyUI goes with it."""
    assert node.rig is not None and job.instance is not None
    node.worker.abandon()
    node.rig.crash(job.instance)  # type: ignore[arg-type]
    assert job.task is not None
    with pytest.raises(ComfyUnavailable):
        await job.task
    await node.settle()


async def pending(node: Node) -> int:
    """Messages of the fleet's stream that a gateway took and has not acknowledged."""
    summary = await node.store.redis.xpending(node.store.stream, GROUP)
    return int(summary["pending"])


async def test_a_pulled_job_runs_here_and_its_outcome_is_recorded_once(pair: list[Node]) -> None:
    node = pair[0]
    key = await submit(node.store, "pulled", graph=graph(filename_prefix="f"))
    await node.take()
    job = running_job(node)
    assert job.instance is not None  # placed on this gateway's instance
    await finished(node, job)
    assert await terminal_events(node.store, key) == ["complete"]
    record = await RemoteRecord.load(node.store, key)
    assert record is not None and record.status == "succeeded"
    assert node.rig is not None and node.rig.outcomes.of("pulled") == ["succeeded"]
    assert await pending(node) == 0 and node.idle()
    node.rig.assert_capacity_whole()


async def test_a_failed_job_is_recorded_once_as_failed(pair: list[Node]) -> None:
    node = pair[0]
    key = await submit(node.store, "broken", graph=graph(filename_prefix="f"))
    await node.take()
    job = running_job(node)
    assert node.rig is not None and job.task is not None
    node.rig.fail(job)
    with pytest.raises(GatewayError):
        await job.task
    await node.settle()
    assert await terminal_events(node.store, key) == ["failed"]
    assert await pending(node) == 0 and node.idle()


async def test_a_job_whose_gateway_died_is_taken_over_and_recorded_once(
    pair: list[Node],
) -> None:
    first, second = pair
    key = await submit(first.store, "orphan", graph=graph(filename_prefix="f"))
    await first.take()
    lost = running_job(first)
    await second.take(reclaim=True)  # no heartbeat from the first: taken over
    await dies(first, lost)
    assert await terminal_events(first.store, key) == []  # still the fleet's to run
    await finished(second, running_job(second))
    assert await terminal_events(second.store, key) == ["complete"]
    record = await RemoteRecord.load(second.store, key)
    assert record is not None and record.status == "succeeded"
    assert await pending(second) == 0 and first.idle() and second.idle()


async def test_a_gateway_overtaken_while_its_job_ran_ends_it_late_and_changes_nothing(
    pair: list[Node],
) -> None:
    quiet, other = pair
    key = await submit(quiet.store, "twice", graph=graph(filename_prefix="f"))
    await quiet.take()
    late = running_job(quiet)
    await other.take(reclaim=True)  # its heartbeat did not come in time: both run it
    await finished(other, running_job(other))
    assert quiet.rig is not None
    quiet.rig.fail(late)  # the first outcome recorded stands
    assert late.task is not None
    with pytest.raises(GatewayError):
        await late.task
    await quiet.settle()
    assert await terminal_events(other.store, key) == ["complete"]
    assert await pending(other) == 0 and quiet.idle() and other.idle()


async def test_a_job_whose_gateways_keep_dying_ends_after_its_max_attempts(
    gateways: Gateways,
) -> None:
    *doomed, last = await gateways(4)  # JOB_MAX_ATTEMPTS=3 (fleet_support)
    key = await submit(last.store, "cursed", graph=graph(filename_prefix="f"))
    await doomed[0].take()  # start 1
    for holder, taker in pairwise([*doomed, last]):
        lost = running_job(holder)
        await taker.take(reclaim=True)  # starts 2 and 3; a fourth is refused: failed here
        await dies(holder, lost)
    assert last.worker.running == {} and last.idle()
    assert await terminal_events(last.store, key) == ["failed"]
    record = await RemoteRecord.load(last.store, key)
    assert record is not None and record.status == "failed"
    assert "JOB_MAX_ATTEMPTS=3" in str(record.error)
    assert await pending(last) == 0


async def stored_events(node: Node, key: str) -> list[tuple[int, str]]:
    return [(int(f["n"]), f["type"]) for _, f in await node.store.redis.xrange(
        node.store.events_key(key))]  # fmt: skip


STARTED = ["queued", "running", "executing"]


@pytest.mark.parametrize("lasts", ["a moment", "a while"])
async def test_a_jobs_events_are_stored_in_order_once_whether_they_go_with_its_end_or_before(
    pair: list[Node], lasts: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Events linger LINGER_S before they are written: a short job's go with its outcome, in
    # its round trip; a longer job's are stored while it runs. Either way: in order, each once.
    # (A job that lasts "a moment" is one that ends within LINGER_S, here made long.)
    if lasts == "a moment":
        monkeypatch.setattr(sink, "LINGER_S", 30.0)
    node = pair[0]
    key = await submit(node.store, f"events-{lasts.replace(' ', '-')}", graph=graph())
    await node.take()
    job = running_job(node)
    assert job.instance is not None and job.waiter is not None
    prompt_id = job.waiter.prompt_id
    job.instance.tracker.handle("execution_start", {"prompt_id": prompt_id})
    job.instance.tracker.handle("executing", {"prompt_id": prompt_id, "node": "2"})
    if lasts == "a while":  # written meanwhile
        for _ in range(200):
            if [t for _, t in await stored_events(node, key)] == STARTED:
                break
            await asyncio.sleep(sink.LINGER_S)
        assert [t for _, t in await stored_events(node, key)] == STARTED
    else:
        assert [t for _, t in await stored_events(node, key)] == ["queued"]  # lingering
    node.rig.finish(job)  # type: ignore[union-attr]
    assert job.task is not None
    await job.task
    await node.settle()
    stored = await stored_events(node, key)
    assert [n for n, _ in stored] == list(range(1, len(stored) + 1))
    assert [t for _, t in stored] == [*STARTED, "complete"]


def accepting(node: Node) -> FleetQueue:
    """This gateway's accepting side, its worker taking a job it has room for in its enqueue."""
    queue = FleetQueue(node.store, AddressPolicy.from_settings(load_settings()), node.sender)
    queue.taker = node.worker
    node.worker.pulling = True  # as once started (its pull loop is the test's to drive)
    return queue


async def accept(
    queue: FleetQueue, request_id: str, owner: str | None = None, max_jobs: int = 0
) -> FleetJob:
    """A job accepted as a synchronous /prompt of this owner's would be."""
    return await queue.submit(request_id, graph(filename_prefix=request_id), JobOptions(),
                              owner=owner, max_jobs=max_jobs, echo_input=None,
                              workflow="prompt")  # fmt: skip


async def test_a_gateway_with_room_takes_the_job_it_accepts_in_its_enqueue(
    pair: list[Node],
) -> None:
    runs, other = pair
    queue = accepting(runs)
    first = await accept(queue, "mine")
    # Started here with no pull: claimed, started and out of the line in its enqueue.
    await eventually(lambda: bool(runs.worker.running))
    state = await runs.store.state(first.record.key)
    assert (state["attempts"], state["gateway"]) == ("1", runs.worker.consumer)
    assert await runs.store.redis.zcard(runs.store.waiting) == 0
    assert runs.worker.reserved == 0 and not runs.worker.starting
    # Refused (its id runs) by a gateway with room: the room it held for it is free again.
    with pytest.raises(Conflict):
        await accept(accepting(other), "mine")
    assert other.worker.reserved == 0 and other.idle() and other.worker._has_room()
    # Its one instance busy, the next job accepted here waits in line, for any gateway.
    second = await accept(queue, "theirs")
    assert runs.worker.reserved == 0 and len(runs.worker.running) == 1
    assert await runs.store.position(second.record.key) == 0
    await other.take()
    await finished(runs, running_job(runs))
    await finished(other, running_job(other))
    for key in (first.record.key, second.record.key):
        assert await terminal_events(runs.store, key) == ["complete"]
    assert await pending(runs) == 0 and runs.idle() and other.idle()


async def test_a_job_accepted_behind_others_waits_its_turn_even_with_room_here(
    pair: list[Node],
) -> None:
    runs, other = pair
    older = await submit(other.store, "older", graph=graph(filename_prefix="o"))
    queue = accepting(runs)
    later = await accept(queue, "later")
    assert not runs.worker.running and not runs.worker.starting and runs.worker.reserved == 0
    assert [await runs.store.position(k) for k in (older, later.record.key)] == [0, 1]
    await runs.take()  # the one first in line, as any pull
    job = running_job(runs)
    assert job.id == "older"
    await finished(runs, job)
    await other.take()
    await finished(other, running_job(other))
    assert await pending(runs) == 0 and runs.idle() and other.idle()


def waiting_for(node: Node, record: RemoteRecord) -> asyncio.Task[JobOutcome]:
    """A request on this gateway waiting for the job's outcome (as a synchronous /prompt)."""
    queue = FleetQueue(node.store, AddressPolicy.from_settings(load_settings()), node.sender)
    return asyncio.create_task(queue.outcome(record.key, record.generation))


@pytest.mark.parametrize("ends", ["succeeds", "fails"])
async def test_the_gateway_that_ran_a_job_hands_its_outcome_to_its_waiter_as_it_is(
    pair: list[Node], ends: str
) -> None:
    # The waiter on the gateway that ran the job takes the runner's own outcome (no read of
    # Redis, no fetch from the shelf); the one on the other gateway reads an equal one back.
    runs, other = pair
    key = await submit(runs.store, f"handed-{ends}", graph=graph(filename_prefix="h"))
    record = await RemoteRecord.load(runs.store, key)
    assert record is not None and record.generation is not None
    for node in pair:
        node.store.signals.start()
    try:
        await eventually(lambda: all(n.store.signals.subscribed for n in pair))
        here, there = waiting_for(runs, record), waiting_for(other, record)
        await runs.take()
        job = running_job(runs)
        assert job.task is not None and runs.rig is not None
        (runs.rig.finish if ends == "succeeds" else runs.rig.fail)(job)
        answers = await asyncio.gather(here, there, return_exceptions=True)
        await runs.settle()
        if ends == "succeeds":
            outcome = await job.task
            assert answers[0] is outcome
            assert isinstance(answers[1], JobOutcome) and answers[1] is not outcome
            assert answers[1].head == outcome.head
        else:
            error = job.task.exception()
            assert isinstance(error, GatewayError) and answers[0] is error
            assert isinstance(answers[1], GatewayError) and answers[1] is not error
            assert answers[1].body() == error.body() and answers[1].status == error.status
        assert await terminal_events(runs.store, key) == [
            "complete" if ends == "succeeds" else "failed"
        ]
        assert not runs.store.signals._settled  # forgotten with its last follower
    finally:
        for node in pair:
            await node.store.signals.close()


async def test_previews_reach_a_follower_on_another_gateway_over_pubsub_only(
    pair: list[Node],
) -> None:
    runs, follows = pair
    key = await submit(runs.store, "previewed", graph=graph(filename_prefix="p"))
    await runs.take()
    job = running_job(runs)
    follows.store.signals.start()
    try:
        record = await RemoteRecord.load(follows.store, key)
        assert record is not None
        stream = record.follow()
        assert (await anext(stream)) is not None  # `queued`: it watches from here
        await eventually(lambda: follows.store.signals.subscribed)
        assert job.waiter is not None and job.waiter.on_preview is not None
        job.waiter.on_preview(PreviewFrame(b"jpeg-bytes", "image/jpeg"), "4")
        seen = await asyncio.wait_for(anext(stream), 5)
        assert seen is not None and seen.type == "preview"
        assert seen.data["image"] == "data:image/jpeg;base64,anBlZy1ieXRlcw=="
        assert (seen.data["node"], seen.data["node_name"]) == ("4", "SaveImage")
        assert record.preview is not None and record.preview.image == b"jpeg-bytes"
        # a record read afresh while it is watched here (as /sdapi/v1/progress reads it)
        fresh = await RemoteRecord.load(follows.store, key)
        assert fresh is not None and fresh.preview == record.preview
        await finished(runs, job)
        rest = [event.type async for event in stream if event is not None]
        assert rest[-1] == "complete" and "preview" not in rest
        assert not follows.store.signals._previews  # forgotten with its last follower
        stored = await runs.store.redis.xrange(runs.store.events_key(key))
        assert "preview" not in [fields["type"] for _, fields in stored]  # never in a stream
    finally:
        await follows.store.signals.close()


async def commands(node: Node, name: str) -> int:
    """How many times Redis has run this command (INFO commandstats), scripts' calls included."""
    stats = await node.store.redis.info("commandstats")
    return int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))


async def test_a_request_waiting_on_the_gateway_that_runs_its_job_reads_nothing_of_it(
    pair: list[Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Accepted and taken here in its enqueue: the waiting request needs no read of Redis, and
    # the job costs Redis two scripts, its enqueue and its outcome (with its events).
    runs, _ = pair
    monkeypatch.setattr(sink, "LINGER_S", 60.0)  # its events go with its outcome, however slow
    await runs.store.redis.script_load(scripts.FINISH)  # as a Redis that ran a job before
    runs.store.signals.start()
    try:
        await eventually(lambda: runs.store.signals.subscribed)
        accepted = await accept(accepting(runs), "unread")
        waiting = accepted.task
        await eventually(lambda: bool(runs.worker.running))
        job = running_job(runs)
        before = {name: await commands(runs, name) for name in ("xrevrange", "hgetall", "evalsha")}
        assert runs.rig is not None
        runs.rig.finish(job)
        answer = await asyncio.wait_for(waiting, 5)
        assert job.task is not None and answer is await job.task
        await runs.settle()
        after = {name: await commands(runs, name) for name in before}
        assert after["xrevrange"] == before["xrevrange"]  # no read of its last event
        assert after["hgetall"] == before["hgetall"]
        assert after["evalsha"] - before["evalsha"] == 1  # its outcome, with its last events
        assert await terminal_events(runs.store, accepted.record.key) == ["complete"]
    finally:
        await runs.store.signals.close()


async def test_a_waiting_request_is_answered_before_redis_has_the_outcome_reads_find_it_ended(
    pair: list[Node], redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The answer goes out as the job ends, before its outcome is in Redis (here Redis is stopped
    # meanwhile); this gateway's reads and writes of the key's jobs wait until Redis has it, so
    # what was answered is ended for them: its state, its id used again, max_jobs.
    runs, _ = pair
    queue = accepting(runs)
    monkeypatch.setattr(sink, "LINGER_S", 60.0)  # its events go with its outcome: no write before

    runs.store.signals.start()
    try:
        await eventually(lambda: runs.store.signals.subscribed)
        accepted = await accept(queue, "early", owner="key-1", max_jobs=1)
        waiting = accepted.task
        await eventually(lambda: bool(runs.worker.running))
        job = running_job(runs)
        redis_server.pause()
        try:
            assert runs.rig is not None
            runs.rig.finish(job)
            answer = await asyncio.wait_for(waiting, 5)  # while Redis is stopped
            assert isinstance(answer, JobOutcome) and answer.error is None
            reading = asyncio.create_task(queue.record("early", "key-1"))
            # its id used again, by an owner at its max_jobs until the first job's end is in
            again = asyncio.create_task(accept(queue, "early", owner="key-1", max_jobs=1))
            await asyncio.sleep(0.2)
            assert not reading.done() and not again.done()  # they wait for Redis's answer
        finally:
            redis_server.resume()
        record = await asyncio.wait_for(reading, 5)
        assert record is not None and record.status == "succeeded"
        second = await asyncio.wait_for(again, 5)  # a new job: no 409, and max_jobs not reached
        assert second.record.generation != accepted.record.generation
        await runs.settle()
        await finished(runs, running_job(runs))
        assert await terminal_events(runs.store, accepted.record.key) == ["complete"]
        assert await pending(runs) == 0 and runs.idle()
    finally:
        await runs.store.signals.close()


async def test_a_gateway_with_room_pulls_a_job_it_hears_of_or_finds_it_looking_every_poll(
    pair: list[Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    runs, accepts = pair
    runs.store.signals.start()
    try:
        await eventually(lambda: runs.store.signals.subscribed)
        monkeypatch.setattr(next_job, "POLL_S", 3600.0)  # it pulls only when it hears of a job
        runs.worker.start()
        await eventually(lambda: runs.worker.next_job._next_look > 0)  # it looked once
        await submit(accepts.store, "heard", graph=graph(filename_prefix="h"))  # not taken there
        await eventually(lambda: bool(runs.worker.running))
        await finished(runs, running_job(runs))
        # Not heard of (its announcement missed): found when it looks on its own.
        await runs.store.signals.close()
        monkeypatch.setattr(next_job, "POLL_S", 0.05)
        runs.worker.next_job._next_look = 0.0
        await submit(accepts.store, "found", graph=graph(filename_prefix="f"))
        await eventually(lambda: bool(runs.worker.running))
        assert running_job(runs).id == "found"
        await finished(runs, running_job(runs))
    finally:
        runs.worker.stop_pulling()
        await runs.store.signals.close()
