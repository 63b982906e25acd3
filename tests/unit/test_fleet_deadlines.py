"""Every wait on the fleet's Redis has an end: a Redis that stops answering with its socket open
(SIGSTOP on a real redis-server: a partition, a paused VM) costs a call QUEUE_TIMEOUT_S, then the
request gets 503 with Retry-After and Redis counts as out of reach, saying why; a subscription
to it is given up and made again; everything works again once it answers (SIGCONT)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.exceptions import RedisError

from app.comfy.graph import Graph
from app.core.addresses import AddressPolicy
from app.core.errors import ComfyUnavailable
from app.core.limits import KeyLimit
from app.core.options import JobOptions
from app.core.settings import load_settings
from app.fleet.queue import FleetQueue
from app.fleet.rates import FleetRates
from app.fleet.store import FleetStore
from app.jobs.webhooks import WebhookSender
from tests.redis_server import RedisServer

TIMEOUT_S = 1.0
GRAPH: Graph = {"1": {"class_type": "EmptyImage", "inputs": {}}}


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.resume()
    server.stop()


@pytest.fixture
async def queue(redis_server: RedisServer) -> AsyncIterator[FleetQueue]:
    store = FleetStore(redis_server.url, "deadlines", ttl_s=60, timeout_s=TIMEOUT_S)
    await store.ensure_group()
    sender = WebhookSender(load_settings())
    yield FleetQueue(store, AddressPolicy.from_settings(load_settings()), sender)
    await sender.aclose()
    await store.aclose()


async def refused_in_time(call: object) -> ComfyUnavailable:
    """The 503 the call ends in, within a few of its deadlines (a paused Redis never answers)."""
    began = time.monotonic()
    with pytest.raises(ComfyUnavailable) as refused:
        await asyncio.wait_for(call, 20)  # type: ignore[arg-type]
    assert time.monotonic() - began < 4 * TIMEOUT_S + 2
    return refused.value


async def test_a_paused_redis_is_a_503_within_the_deadline_then_works_again(
    queue: FleetQueue, redis_server: RedisServer
) -> None:
    store = queue.store
    redis_server.pause()
    refused = await refused_in_time(
        queue.submit("p1", GRAPH, JobOptions(), owner=None, echo_input=None, workflow="prompt")
    )
    assert refused.status == 503 and refused.headers["Retry-After"] == "5"
    assert "QUEUE_TIMEOUT_S (1s)" in refused.message
    assert str(redis_server.port) not in refused.message  # Redis's address stays in the log
    assert store.reachability.down_reason() == (
        "the job queue (Redis, QUEUE_URL) is not reachable: it did not answer within "
        "QUEUE_TIMEOUT_S (1s)"
    )
    for read in (queue.record("p1", None), queue.owners("p1"), queue.jobs_of(None),
                 queue.interrupt("p1", None)):  # fmt: skip
        await refused_in_time(read)
    began = time.monotonic()
    with pytest.raises(RedisError):  # the worker's pull too
        await store.pull("gateway-1")
    assert time.monotonic() - began < 2 * TIMEOUT_S + 2
    limit = KeyLimit(requests_per_minute=60, burst=1)
    began = time.monotonic()
    assert await FleetRates(store).take("key-1", limit) is None  # counted here meanwhile
    assert time.monotonic() - began < 0.5  # Redis is known out: nothing waits on it
    redis_server.resume()
    await queue.submit("p1", GRAPH, JobOptions(), owner=None, echo_input=None, workflow="prompt")
    record = await queue.record("p1", None)
    assert record is not None and record.status == "queued"


async def test_a_subscription_to_a_paused_redis_is_made_again(
    queue: FleetQueue, redis_server: RedisServer
) -> None:
    store = queue.store
    heard: list[str] = []

    async def on_cancel(key: str) -> None:
        heard.append(key)

    store.signals.on_cancel = on_cancel
    store.signals.start()
    await until(lambda: store.signals.subscribed, 10)
    redis_server.pause()
    await until(lambda: not store.reachability.up, 20)  # nothing else asked Redis meanwhile
    assert "QUEUE_TIMEOUT_S" in (store.reachability.down_reason() or "")
    redis_server.resume()
    await until(lambda: store.signals.subscribed, 20)
    await store.redis.publish(store.signals.cancel_channel, "job-after")
    await until(lambda: heard == ["job-after"], 10)


async def until(check: object, timeout_s: float) -> None:
    """Poll check() (a real server's state) until it is true; fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_pause_really_stops_the_server(redis_server: RedisServer) -> None:
    """The outage the tests above make: the process stopped, its socket still open."""
    assert redis_server.proc is not None
    redis_server.pause()
    with open(f"/proc/{redis_server.proc.pid}/stat") as stat:
        assert stat.read().split(") ")[1][0] == "T"  # stopped
    redis_server.resume()
    with redis_server.client() as client:
        assert client.ping()
