"""A fleet against a hostile or broken world: two real gateways (each with its own ComfyUI on CPU)
on one real redis-server.

A Redis that stops answering with its socket open (SIGSTOP: a partition, a paused VM) gets new
jobs a 503 with Retry-After within seconds and /ready says why; once it answers again every job
accepted before ends exactly once. A job cancelled while queued and its id used again runs once.
A webhook receiver that answers a byte at a time is cut off at WEBHOOK_TIMEOUT_S, retried, and
reported, and the gateway holds nothing of it. A job's progress webhook is sent by the gateway
that runs it, and its partner-node key reaches that gateway's ComfyUI and no answer or log.
After each, both gateways' capacity is whole.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.integration.harness import Gateway, assert_capacity_whole, eventually
from tests.integration.receiver import Receiver
from tests.integration.test_fleet import (
    NAME,
    ended_webhooks,
    jobs_run,
    redis_client,
    running_on,
    start_fleet,
    status,
    stop_all,
    submit,
    txt2img,
)
from tests.integration.test_prompt import empty_image
from tests.redis_server import RedisServer
from tests.trickle import Trickle, held

pytestmark = pytest.mark.timeout(600)
WEBHOOK_TIMEOUT_S = 1


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, redis: RedisServer) -> Iterator[list[Gateway]]:
    """Two gateways; a webhook attempt may take a second, and is made twice."""
    env = {
        "WEBHOOK_TIMEOUT_S": str(WEBHOOK_TIMEOUT_S),
        "PROMPT_WEBHOOK_RETRIES": "2",
        "WEBHOOK_BACKOFF_S": "0",
    }
    gateways = start_fleet(tmp_path_factory.mktemp("trust"), 2, redis, **env)
    yield gateways
    redis.resume()
    stop_all(gateways)


def whole(gateways: list[Gateway]) -> None:
    for gateway in gateways:
        assert_capacity_whole(gateway)


def test_a_paused_redis_is_a_503_within_seconds_and_every_accepted_job_then_ends_once(
    pair: list[Gateway], redis: RedisServer, receiver: Receiver
) -> None:
    hook = receiver.url("/paused")
    for n in range(3):  # one running on each gateway, one queued
        answer = submit(pair[n % 2], txt2img(30, 160 + n), f"paused-{n}", webhook=hook)
        assert answer.status_code == 202, answer.text
    with ThreadPoolExecutor(1) as threads:
        sync = threads.submit(submit, pair[1], empty_image(11), "paused-sync")
        eventually(lambda: status(pair[0], "paused-sync") != 404, 60, "paused-sync accepted")
        running_on(pair, redis, "paused-0")
        redis.pause()
        paused_at = time.monotonic()
        try:
            for gateway in pair:
                with gateway.client(timeout_s=20) as c:
                    began = time.monotonic()
                    refused = c.post("/prompt", json={"prompt": empty_image(3), "id": "during"})
                    took_s = time.monotonic() - began
                    assert refused.status_code == 503, refused.text
                    assert took_s < 15, f"the 503 took {took_s:.1f}s"  # it hung past 30 s before
                    assert refused.headers["retry-after"] == "5"
                    assert "Redis" in refused.json()["error"]
                    assert str(redis.port) not in refused.text  # Redis's address: the log's
                    reading = c.get("/prompt/paused-0")
                    assert reading.status_code == 503, reading.text
                    eventually(lambda c=c: c.get("/ready").status_code == 503, 15, "/ready 503")
                    reason = c.get("/ready").json()["reason"]
                    assert "Redis" in reason and "QUEUE_TIMEOUT_S" in reason, reason
                    assert c.get("/health").status_code == 200  # no reason to restart the pod
            time.sleep(max(0.0, 8 - (time.monotonic() - paused_at)))
        finally:
            redis.resume()
        answer = sync.result(timeout=240)
    assert answer.status_code == 200, answer.text
    receiver.wait_for("/paused", 3, timeout_s=240)
    time.sleep(1.0)  # a second delivery of any job would show by now
    assert ended_webhooks(receiver, "/paused") == Counter(f"paused-{n}" for n in range(3))
    for n in range(3):
        assert status(pair[0], f"paused-{n}") == "succeeded"
    with redis_client(pair) as client:
        eventually(lambda: client.xlen(f"{NAME}:jobs") == 0, 30, "every message acknowledged")
    whole(pair)


def test_a_job_cancelled_while_queued_and_its_id_used_again_runs_once(
    pair: list[Gateway], redis: RedisServer, receiver: Receiver
) -> None:
    busy_hook, hook = receiver.url("/reuse-busy"), receiver.url("/reuse")
    before = sum(jobs_run(g) for g in pair)
    for n in range(2):  # both gateways busy: what comes next waits in the fleet's queue
        answer = submit(pair[n], txt2img(3000, 170 + n), f"reuse-busy-{n}", webhook=busy_hook)
        assert answer.status_code == 202, answer.text
    runners = [running_on(pair, redis, f"reuse-busy-{n}") for n in range(2)]
    assert {g.pid for g in runners} == {g.pid for g in pair}
    queued = submit(pair[0], empty_image(21), "reuse-1", webhook=hook)
    assert queued.status_code == 202, queued.text
    assert status(pair[1], "reuse-1") == "queued"
    with pair[1].client() as c:
        assert c.post("/interrupt", json={"id": "reuse-1"}).status_code == 200
    [cancelled] = receiver.wait_for("/reuse", 1)
    assert cancelled.json()["code"] == "interrupted"
    again = submit(pair[1], empty_image(22), "reuse-1", webhook=hook)  # the same id, again
    assert again.status_code == 202, again.text
    for n in range(2):
        with pair[n].client() as c:
            assert c.post("/interrupt", json={"id": f"reuse-busy-{n}"}).status_code == 200
    receiver.wait_for("/reuse", 2, timeout_s=120)
    time.sleep(1.5)  # a second run of it would have ended by now
    events = [d.json()["event"] for d in receiver.deliveries("/reuse")]
    assert events == ["prompt.failed", "output.complete"]
    with redis_client(pair) as client:
        assert client.hget(f"{NAME}:job:reuse-1", "attempts") == "1"  # started once, by one
        eventually(lambda: client.xlen(f"{NAME}:jobs") == 0, 30, "every message acknowledged")
    assert sum(jobs_run(g) for g in pair) - before == 3  # the two busy ones, and it once
    whole(pair)


def test_a_webhook_receiver_that_answers_a_byte_at_a_time_is_cut_off_and_reported(
    pair: list[Gateway],
) -> None:
    slow = Trickle("answers")
    try:
        failed_before = [webhooks_failed(g) for g in pair]
        answer = submit(pair[0], empty_image(31), "trickled-1", webhook=slow.url("/hook"))
        assert answer.status_code == 202, answer.text

        def reported() -> bool:
            now = [webhooks_failed(g) for g in pair]
            return sum(now) - sum(failed_before) == 1

        eventually(reported, 30, "the delivery to give up and be counted as failed")
        assert len(slow.connections) == 2  # PROMPT_WEBHOOK_RETRIES attempts, each cut off
        assert status(pair[1], "trickled-1") == "succeeded"
        for gateway in pair:  # nothing of it is held
            eventually(lambda g=gateway: held(slow.port, g.pid) == 0, 10, "connections let go")
        with redis_client(pair) as client:
            eventually(lambda: client.xlen(f"{NAME}:jobs") == 0, 30, "its message acknowledged")
    finally:
        slow.close()
    whole(pair)


def webhooks_failed(gateway: Gateway) -> float:
    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    found = re.search(
        r'^comfy_gateway_webhook_deliveries_total\{kind="job",outcome="failed"\} (\S+)$',
        text,
        re.MULTILINE,
    )
    assert found is not None, "the webhook delivery counter is missing"
    return float(found.group(1))


def test_progress_webhooks_and_the_partner_key_go_with_the_job_to_the_gateway_that_runs_it(
    pair: list[Gateway], receiver: Receiver, redis: RedisServer
) -> None:
    """The job's progress webhook is sent by the gateway that runs it; its partner-node key
    crosses Redis to that gateway's ComfyUI, and no gateway says it."""
    key = "comfyui-" + "f1" * 24
    prompt = txt2img(12, 75)
    prompt["4"]["inputs"].update(width=256, height=256)  # a step a quarter second: several sent
    body = {"progress_webhook": receiver.url("/fleet-progress"), "api_key_comfy_org": key,
            "webhook_v2": receiver.url("/fleet-progress-end")}  # fmt: skip
    assert submit(pair[0], prompt, "fleet-pw", **body).status_code == 202
    runner = running_on(pair, redis, "fleet-pw")
    if runner is not pair[0]:  # run elsewhere: the key crossed Redis, and came back to no one
        assert "fleet-pw" in runner.log_text()
    receiver.wait_for("/fleet-progress-end", 1, timeout_s=300)
    heard = [d.json() for d in receiver.deliveries("/fleet-progress")]
    assert [h["type"] for h in heard][:1] == ["job.started"] and {h["id"] for h in heard} == {
        "fleet-pw"
    }
    steps = [h["step"] for h in heard if h["type"] == "job.progress" and h["node"] == "5"]
    assert steps and steps == sorted(set(steps)), heard
    assert len(receiver.deliveries("/fleet-progress-end")) == 1
    said = [g.log_text() for g in pair]
    for gateway in pair:
        with gateway.client() as c:
            said += [c.get("/prompt/fleet-pw").text, c.get("/prompt/fleet-pw/events").text]
    assert all(key not in text for text in said)
