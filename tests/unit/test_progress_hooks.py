"""Progress webhooks (app.jobs.progress_hooks): started once, then the newest progress, throttled,
signed; at most one waiting per job; what waits is dropped at the job's end; a receiver that
hangs holds its own delivery, never the outcome webhook."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from standardwebhooks import Webhook

from app.core.errors import GatewayError
from app.core.outcome import JobOutcome
from app.core.settings import load_settings
from app.jobs.progress_hooks import ProgressFeed, ProgressHooks
from app.jobs.records import JobRecord
from app.jobs.webhooks import WebhookSender, deliver_job_end
from tests.integration.receiver import Delivery, Receiver

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
GRAPH = {"3": {"class_type": "KSampler", "inputs": {}}, "9": {"class_type": "SaveImage"}}


def hooks(**settings: Any) -> ProgressHooks:
    per_s, concurrency = settings.pop("per_s", 1000.0), settings.pop("concurrency", 16)
    loaded = load_settings(allow_private_urls=True, webhook_secret=SECRET, **settings)
    return ProgressHooks(WebhookSender(loaded), per_s=per_s, concurrency=concurrency)


@pytest_asyncio.fixture
async def made() -> AsyncIterator[list[ProgressHooks]]:
    """Hooks a test makes, closed after it."""
    made: list[ProgressHooks] = []
    yield made
    for made_hooks in made:
        await made_hooks.aclose()


def follow(progress: ProgressHooks, url: str, job_id: str = "job-1") -> tuple[JobRecord, Any]:
    record = JobRecord(job_id, "p-1", owner="k1")
    feed = progress.feed(url, job_id, lambda: GRAPH, key_name="acme")
    record.listeners.append(feed.on_event)
    return record, feed


def step(record: JobRecord, value: int, top: int = 50, node: str = "3") -> None:
    record.on_comfy_event("progress", {"value": value, "max": top, "node": node})


async def arrived(receiver: Receiver, path: str, count: int) -> list[Delivery]:
    """Wait (without blocking the loop the feeds run on) for `count` deliveries to path."""
    for _ in range(1000):
        if len(got := receiver.deliveries(path)) >= count:
            return got
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path}: {len(receiver.deliveries(path))} deliveries, wanted {count}")


async def settled(feed: ProgressFeed) -> None:
    for _ in range(1000):
        if feed.task is None:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the feed still sends")


async def test_started_then_the_newest_progress_signed_with_node_names(
    receiver: Receiver, made: list[ProgressHooks]
) -> None:
    made.append(progress := hooks(per_s=1000.0))
    record, feed = follow(progress, receiver.url("/p/newest"))
    record.on_comfy_event("execution_start", {})
    for value in range(1, 51):  # one burst: every step but the last is replaced before it goes
        step(record, value)
    first, second = await arrived(receiver, "/p/newest", 2)
    record.on_comfy_event("execution_start", {})  # a retry on another instance: not again
    step(record, 7, 8, node="9")
    third = (await arrived(receiver, "/p/newest", 3))[2]
    await settled(feed)
    assert len(receiver.deliveries("/p/newest")) == 3
    bodies = [Webhook(SECRET).verify(d.body, d.headers) for d in (first, second, third)]
    assert [b["type"] for b in bodies] == ["job.started", "job.progress", "job.progress"]
    assert bodies[0]["id"] == "job-1" and bodies[0]["metadata"] == {"key_name": "acme"}
    assert {k: bodies[1][k] for k in ("node", "node_name", "step", "max", "percent")} == {
        "node": "3", "node_name": "KSampler", "step": 50, "max": 50, "percent": 100.0,
    }  # fmt: skip
    assert (bodies[2]["node_name"], bodies[2]["step"], bodies[2]["percent"]) == ("SaveImage", 7,
                                                                                 87.5)  # fmt: skip
    assert len({d.headers["webhook-id"] for d in (first, second, third)}) == 3


async def test_at_most_per_s_the_newest_wins_meanwhile(
    receiver: Receiver, made: list[ProgressHooks]
) -> None:
    made.append(progress := hooks(per_s=0.5))  # one delivery, then 2 s before the next
    record, feed = follow(progress, receiver.url("/p/throttle"))
    record.on_comfy_event("execution_start", {})
    await arrived(receiver, "/p/throttle", 1)
    step(record, 1)
    await asyncio.sleep(0.1)  # well within the 2 s: still waiting, so step 1 is replaced
    step(record, 2)
    assert feed.progress is not None and feed.progress["step"] == 2  # one waits, the newest
    got = await arrived(receiver, "/p/throttle", 2)
    await asyncio.sleep(0.1)
    assert [d.json().get("step") for d in receiver.deliveries("/p/throttle")] == [None, 2]
    assert got[1].json()["type"] == "job.progress"


async def test_the_jobs_end_drops_what_waits(receiver: Receiver, made: list[ProgressHooks]) -> None:
    made.append(progress := hooks(per_s=0.5))
    record, feed = follow(progress, receiver.url("/p/end"))
    record.on_comfy_event("execution_start", {})
    await arrived(receiver, "/p/end", 1)
    step(record, 1)  # waits for the throttle
    record.end(JobOutcome.failed(record.id, {}, GatewayError("no")))
    assert feed.progress is None and feed.started is None
    await settled(feed)
    step(record, 2)  # a straggler after the end: never sent
    assert feed.task is None
    assert [d.json()["type"] for d in receiver.deliveries("/p/end")] == ["job.started"]


async def test_a_hanging_receiver_holds_neither_the_outcome_webhook_nor_memory(
    receiver: Receiver, made: list[ProgressHooks]
) -> None:
    settings = {"webhook_timeout_s": 3.0, "prompt_webhook_retries": 1}
    made.append(progress := hooks(per_s=1000.0, concurrency=1, **settings))
    hang = receiver.script("/p/hang", delays_s=(6.0,))
    record, feed = follow(progress, hang, "slow")
    record.on_comfy_event("execution_start", {})
    await arrived(receiver, "/p/hang", 1)  # in flight, unanswered
    for value in range(1, 1001):
        step(record, value, 1000)
    other, other_feed = follow(progress, receiver.url("/p/other"), "other")
    other.on_comfy_event("execution_start", {})  # waits for the one delivery slot
    outcome_sender = WebhookSender(load_settings(allow_private_urls=True))
    try:
        await deliver_job_end(
            outcome_sender, webhook=None, webhook_v2=receiver.url("/p/outcome"),
            graph={}, outcome=JobOutcome("slow", {}, ()),
        )  # fmt: skip
    finally:
        await outcome_sender.aclose()
    # The outcome went while the progress delivery still hung, and the other job's waited.
    assert len(receiver.deliveries("/p/outcome")) == 1
    assert feed.task is not None and receiver.deliveries("/p/other") == []
    assert feed.started is None and feed.progress is not None  # one waits: the newest
    assert feed.progress["step"] == 1000
    record.end(JobOutcome("slow", {}, ()))
    await arrived(receiver, "/p/other", 1)  # the slot came back after the timeout
    await settled(feed)
    assert len(receiver.deliveries("/p/hang")) == 1  # nothing after the end
    await settled(other_feed)
