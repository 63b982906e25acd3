"""The fleet's Redis layer against a real redis-server: the scripts that make a job's outcome
once-only, taking over a job whose gateway went quiet, handing one back, following a job's
events on any gateway, and coming back from a Redis that lost its data."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from app.core.limits import KeyLimit
from app.fleet.order import QUEUED
from app.fleet.rates import FleetRates
from app.fleet.records import RemoteRecord
from app.fleet.store import FleetStore, MaxJobsReached, fleet_key, split_key
from app.fleet.stream import GROUP, NOT_HELD, Pulled
from app.jobs.records import JobEvent
from tests.redis_server import RedisServer


@pytest.fixture
async def store(
    redis_server: RedisServer, request: pytest.FixtureRequest
) -> AsyncIterator[FleetStore]:
    fleet = FleetStore(redis_server.url, f"t-{request.node.name}", ttl_s=60)
    await fleet.ensure_group()
    fleet.signals.start()
    yield fleet
    await fleet.aclose()


def spec(key: str, owner: str | None = None) -> dict[str, object]:
    return {"id": key, "owner": owner, "graph": {}, "options": {}, "workflow": "prompt"}


async def current(store: FleetStore, key: str) -> Pulled:
    """The message of the job's current generation, as the gateway that pulled it holds it."""
    return Pulled(await store.redis.hget(store.job_key(key), "msg"), key)


async def test_a_running_id_cannot_be_queued_twice_but_a_finished_one_can(
    store: FleetStore,
) -> None:
    assert await store.enqueue("a", spec("a"), {"id": "a"})
    assert not await store.enqueue("a", spec("a"), {"id": "a"})
    assert await store.finish(await current(store, "a"), "succeeded", "complete", {"images": []})
    assert await store.enqueue("a", spec("a"), {"id": "a"})
    record = await RemoteRecord.load(store, "a")
    assert record is not None
    assert (record.status, record.last_event_id) == ("queued", 1)


async def test_a_pull_claims_reads_and_starts_the_next_job_in_one_round_trip(
    store: FleetStore,
) -> None:
    assert await store.enqueue("p", spec("p"), {"id": "p"})
    before = await store.state("p")
    pulled = await store.pull("gateway-1", max_attempts=2)
    assert pulled is not None and pulled.key == "p"
    assert pulled.state == before and before["msg"] == pulled.message_id  # as it was
    assert pulled.started == 1  # as START would have answered
    after = await store.state("p")
    assert (after["attempts"], after["gateway"]) == ("1", "gateway-1")
    # One started as often as it may be is only claimed: admit ends it (JOB_MAX_ATTEMPTS).
    assert await store.enqueue("q", spec("q"), {"id": "q"})
    await store.redis.hset(store.job_key("q"), "attempts", 2)
    tired = await store.pull("gateway-1", max_attempts=2)
    assert tired is not None and tired.key == "q" and tired.started == 0
    assert (await store.state("q"))["attempts"] == "2" and "gateway" not in await store.state("q")
    # Without max_attempts a pull starts nothing (admit starts it apart).
    assert await store.enqueue("r", spec("r"), {"id": "r"})
    plain = await store.pull("gateway-1")
    assert plain is not None and plain.started == 0 and "attempts" not in await store.state("r")


def test_a_jobs_key_is_its_owner_and_its_id() -> None:
    assert fleet_key("alice", "order-1") == "alice/order-1"
    assert fleet_key(None, "order-1") == "order-1"  # API keys off: the id, as before owners
    assert split_key("alice/order-1") == ("alice", "order-1")
    assert split_key("key-0123456789ab/a:b.c") == ("key-0123456789ab", "a:b.c")
    assert split_key("order-1") == (None, "order-1")


async def test_two_owners_queue_the_same_id_as_two_jobs_and_the_index_knows_both(
    store: FleetStore,
) -> None:
    alice, bob = fleet_key("alice", "o1"), fleet_key("bob", "o1")
    assert await store.enqueue(alice, spec("o1", "alice"), {"id": "o1"})
    assert await store.enqueue(bob, spec("o1", "bob"), {"id": "o1"})
    assert not await store.enqueue(alice, spec("o1", "alice"), {"id": "o1"})  # still running
    assert await store.owners("o1") == ["alice", "bob"]
    assert await store.owners("o2") == []
    loaded = [await RemoteRecord.load(store, key) for key in (alice, bob)]
    assert [(r.id, r.owner) for r in loaded if r is not None] == [("o1", "alice"), ("o1", "bob")]
    assert (await store.active("alice"), await store.active("bob")) == (1, 1)

    assert await store.finish(await current(store, alice), "succeeded", "complete", {"images": []})
    assert await store.active("alice") == 0
    owners_key = store.owners_key("o1")
    assert await store.redis.ttl(owners_key) == -1  # bob's job still runs: the index stays
    assert await store.owners("o1") == ["alice", "bob"]  # alice's record is kept for its TTL
    assert await store.finish(
        await current(store, bob), "failed", "failed", {"id": "o1"}, {"error": "x"}
    )
    assert 0 < await store.redis.ttl(owners_key) <= 60  # it goes with the last of them
    await store.redis.delete(store.job_key(alice))  # as alice's record expires
    assert await store.owners("o1") == ["bob"]
    assert await store.enqueue(alice, spec("o1", "alice"), {"id": "o1"})  # a finished id again
    assert await store.redis.ttl(owners_key) == -1


async def test_max_jobs_counts_an_owners_jobs_queued_or_running(store: FleetStore) -> None:
    first, second = fleet_key("solo", "s1"), fleet_key("solo", "s2")
    assert await store.enqueue(first, spec("s1", "solo"), {"id": "s1"}, max_jobs=1)
    with pytest.raises(MaxJobsReached) as refused:
        await store.enqueue(second, spec("s2", "solo"), {"id": "s2"}, max_jobs=1)
    assert refused.value.have == 1
    assert not await store.state(second)  # nothing of it was stored, nor queued
    assert await store.redis.xlen(store.stream) == 1
    assert await store.enqueue(second, spec("s2", "solo"), {"id": "s2"}, max_jobs=2)
    assert await store.enqueue(fleet_key("other", "s3"), spec("s3", "other"), {}, max_jobs=1)
    assert await store.active("solo") == 2
    assert await store.finish(
        await current(store, first), "interrupted", "failed", {"id": "s1"}, {"error": "x"}
    )
    assert await store.active("solo") == 1
    # A job that vanished without an outcome (only by hand) stops counting at the next check.
    await store.redis.delete(store.job_key(second))
    assert await store.enqueue(fleet_key("solo", "s4"), spec("s4", "solo"), {}, max_jobs=1)
    assert await store.active("solo") == 1


async def test_an_outcome_is_recorded_once_and_then_no_event_is_added(store: FleetStore) -> None:
    await store.enqueue("b", spec("b"), {"id": "b"})
    assert await store.finish(await current(store, "b"), "succeeded", "complete", {"images": ["x"]})
    error = {"error": "late", "code": "comfy_unavailable", "status": 503}
    assert not await store.finish(await current(store, "b"), "failed", "failed", {"id": "b"}, error)
    late = JobEvent(0, "progress", {"value": 1})
    await store.append_all(await current(store, "b"), "gateway-1", [(late, "running", None)])
    record = await RemoteRecord.load(store, "b")
    assert record is not None
    assert (record.status, record.stored, record.error) == ("succeeded", {"images": ["x"]}, None)
    assert record.last_event_id == 2  # queued, complete: nothing after the end
    assert 0 < await store.redis.ttl(store.job_key("b")) <= 60


async def test_a_job_is_taken_by_one_gateway_and_taken_over_when_it_goes_quiet(
    store: FleetStore,
) -> None:
    await store.enqueue("c", spec("c"), {"id": "c"})
    first = await store.pull("gateway-1")
    assert first is not None and first.key == "c" and not first.reclaimed
    assert await store.pull("gateway-2") is None
    assert await store.reclaim("gateway-2", idle_ms=60_000) is None  # still fresh
    await asyncio.sleep(0.3)
    await store.heartbeat("gateway-1", [first.message_id])  # still working on it
    assert await store.reclaim("gateway-2", idle_ms=200) is None
    await asyncio.sleep(0.3)  # gateway-1 went quiet
    taken = await store.reclaim("gateway-2", idle_ms=200)
    assert taken is not None and taken.key == "c" and taken.reclaimed
    # gateway-1 comes back: its heartbeat takes nothing back, and learns the job went elsewhere.
    assert await store.heartbeat("gateway-1", [first.message_id]) == [first.message_id]
    assert await store.heartbeat("gateway-2", [taken.message_id]) == []
    assert await store.start(first, "gateway-1") == NOT_HELD  # no longer gateway-1's to start
    assert await store.start(taken, "gateway-2") == 1
    again = await store.reclaim("gateway-3", idle_ms=0)  # gateway-2 went quiet in turn
    assert again is not None and again.message_id == taken.message_id
    assert await store.start(again, "gateway-3") == 2
    await store.ack(taken)
    assert await store.redis.xlen(store.stream) == 0  # acked entries are deleted: XLEN = depth
    assert await store.redis.hget(store.job_key("c"), "delivered") == "1"


async def test_a_job_handed_back_keeps_its_place_in_the_queue(store: FleetStore) -> None:
    for key in ("d1", "d2"):
        await store.enqueue(key, spec(key), {"id": key})
    pulled = await store.pull("gateway-1")
    assert pulled is not None and pulled.key == "d1"
    assert await store.position("d2") == 0
    assert await store.release(pulled, "gateway-1")
    # Its rank is from when it was first queued: it goes before d2 again, as a new generation.
    assert await store.position("d1") == 0 and await store.position("d2") == 1
    held = await store.redis.xpending_range(store.stream, GROUP, "-", "+", 10)
    assert {entry["consumer"] for entry in held} == {QUEUED}  # nobody runs either
    assert len(held) == 2 and pulled.message_id not in {entry["message_id"] for entry in held}
    order = [(await store.pull("gateway-2")) for _ in range(2)]
    assert [p.key for p in order if p is not None] == ["d1", "d2"]


async def test_cancel_ends_a_job_nobody_took_and_signals_one_that_runs(
    store: FleetStore,
) -> None:
    await store.enqueue("e1", spec("e1"), {"id": "e1"})
    await store.enqueue("e2", spec("e2"), {"id": "e2"})
    heard: list[str] = []

    async def on_cancel(key: str) -> None:
        heard.append(key)

    store.signals.on_cancel = on_cancel
    await asyncio.sleep(0.2)  # subscribed
    body = {"error": "stop", "code": "interrupted"}
    ended = await store.cancel("e1", {**body, "status": 409}, {"id": "e1", **body})
    assert ended == spec("e1")  # its request: for its webhooks
    taken = await store.pull("gateway-1")
    assert taken is not None and taken.key == "e2"  # e1 left the queue with its end
    assert await store.start(taken, "gateway-1") == 1
    assert await store.cancel("e2", {**body, "status": 409}, {"id": "e2", **body}) == {}
    for _ in range(50):
        if heard:
            break
        await asyncio.sleep(0.05)
    assert heard == ["e2"]
    assert await store.cancel("e1", {}, {}) is None  # ended already
    assert await store.cancel("nope", {}, {}) is None
    record = await RemoteRecord.load(store, "e1")
    assert record is not None
    assert (record.status, record.error_status, record.error) == ("interrupted", 409, body)


async def test_a_follower_on_any_gateway_sees_each_event_then_the_end(store: FleetStore) -> None:
    await store.enqueue("f", spec("f"), {"id": "f"})
    record = await RemoteRecord.load(store, "f")
    assert record is not None
    seen: list[tuple[int, str]] = []

    async def follow() -> None:
        async for event in record.follow(idle_s=10):
            if event is not None:
                seen.append((event.id, event.type))

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0.2)
    pulled = await store.pull("gateway-1")
    assert pulled is not None and await store.start(pulled, "gateway-1") == 1
    await store.append_all(pulled, "gateway-1", [(JobEvent(0, "running", {}), "running", None)])
    progress = JobEvent(0, "progress", {"value": 1, "max": 2})
    await store.append_all(pulled, "gateway-1", [(progress, "", {"value": 1})])
    await store.finish(await current(store, "f"), "succeeded", "complete", {"images": []})
    await asyncio.wait_for(follower, 3)  # woken by the signal, not by the 5 s poll
    assert seen == [(1, "queued"), (2, "running"), (3, "progress"), (4, "complete")]
    assert (record.status, record.stored) == ("succeeded", {"images": []})
    resumed = [e.id async for e in record.follow(after=2) if e is not None]
    assert resumed == [3, 4]


async def test_a_redis_that_lost_its_data_gets_its_consumer_group_back(store: FleetStore) -> None:
    await store.redis.delete(store.stream)  # as after a restart without persistence
    assert await store.pull("gateway-1") is None
    assert await store.enqueue("g", spec("g"), {"id": "g"})
    pulled = await store.pull("gateway-1")
    assert pulled is not None and pulled.key == "g"


def test_the_redis_the_tests_run_has_what_the_fleet_needs(redis_server: RedisServer) -> None:
    """XAUTOCLAIM needs Redis 6.2; KEDA's lag-based trigger needs 7."""
    with redis_server.client() as client:
        major, minor = map(int, str(client.info("server")["redis_version"]).split(".")[:2])
    assert (major, minor) >= (7, 0)


async def test_a_keys_rate_is_one_bucket_for_every_gateway_of_the_fleet(
    store: FleetStore, redis_server: RedisServer
) -> None:
    """Two gateways' stores take from one bucket: 3 at once, then one per interval."""
    other = FleetStore(redis_server.url, store.name, ttl_s=60)
    try:
        takes = [await s.take_rate("key-a", 30.0, 3) for s in (store, other, store)]
        assert takes == [None, None, None]
        wait_s = await other.take_rate("key-a", 30.0, 3)
        assert wait_s is not None and 29.0 < wait_s <= 30.0  # the next token in one interval
        assert await store.take_rate("key-b", 30.0, 3) is None  # another key: its own bucket
        ttl_ms = await store.redis.pttl(store.rate_key("key-a"))
        assert 0 < ttl_ms <= 91_000  # gone once the bucket is full again, plus a second
    finally:
        await other.aclose()


async def test_a_refill_lets_the_next_request_through(store: FleetStore) -> None:
    assert await store.take_rate("key-r", 0.2, 1) is None
    wait_s = await store.take_rate("key-r", 0.2, 1)
    assert wait_s is not None and 0 < wait_s <= 0.2
    await asyncio.sleep(wait_s + 0.05)
    assert await store.take_rate("key-r", 0.2, 1) is None


async def test_fleet_rates_count_on_this_gateway_while_redis_is_out(store: FleetStore) -> None:
    rates = FleetRates(store)
    limit = KeyLimit(requests_per_minute=2, burst=1)
    assert await rates.take("key-o", limit) is None
    assert await rates.take("key-o", limit) is not None  # Redis's bucket is empty
    store.reachability.failed(ConnectionError("test: Redis is out"))
    assert await rates.take("key-o", limit) is None  # this gateway's own bucket, still full
    assert await rates.take("key-o", limit) is not None
    store.reachability.answered()
    assert await rates.take("key-o", limit) is not None  # Redis's bucket again, still empty


async def test_an_outcome_asked_again_by_the_gateway_that_recorded_it_is_its_own(
    store: FleetStore,
) -> None:
    # Its script ran and its answer was lost: asked again, the recorder is told it recorded it
    # (it delivers the webhooks); any other gateway is told it did not.
    await store.enqueue("r", spec("r"), {"id": "r"})
    pulled = await store.pull("gateway-1")
    assert pulled is not None
    for _ in range(2):
        assert await store.finish(pulled, "succeeded", "complete", {"images": []},
                                  consumer="gateway-1")  # fmt: skip
    assert not await store.finish(pulled, "succeeded", "complete", {"images": []},
                                  consumer="gateway-2")  # fmt: skip
    types = [f["type"] for _, f in await store.redis.xrange(store.events_key("r"))]
    assert types == ["queued", "complete"]


async def test_a_job_left_waiting_is_announced_and_one_taken_in_its_enqueue_is_not(
    store: FleetStore,
) -> None:
    async with store.redis.pubsub() as pubsub:
        await pubsub.subscribe(store.signals.queued_channel)
        taken = await store.queue_job("t1", spec("t1"), {"id": "t1"}, take_as="gateway-1")
        assert taken[1] is not None  # taken by its gateway at once: nobody else is told
        await store.enqueue("t2", spec("t2"), {"id": "t2"})
        pulled = await store.pull("gateway-2")
        assert pulled is not None and await store.release(pulled, "gateway-2")  # handed back
        heard: list[str] = []
        async with asyncio.timeout(5):
            while len(heard) < 2:  # (None: a subscription's own message, skipped)
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    heard.append(message["data"])
        assert heard == ["t2", "t2"]  # queued, then queued again; never t1
