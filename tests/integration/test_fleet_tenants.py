"""Keys as tenants in a fleet: two real gateways (each with its own ComfyUI on CPU) on one real
redis-server, with named keys, an admin key and a max_jobs limit.

A job's id is its key's across the fleet (two keys use one id through two gateways and each gets
its own job); another key's job is, through every gateway, the same 404 as an id nobody used,
for reading, following and interrupting; the admin key sees, follows and interrupts any key's
job through any gateway; max_jobs counts the key's jobs in the whole fleet.
"""

from __future__ import annotations

import base64
import io
import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.integration.harness import Gateway, eventually
from tests.integration.receiver import Receiver
from tests.integration.tenants import ADMIN, ALICE, BOB, METERED, SECRETS, SOLO, client
from tests.integration.test_fleet import NAME, start_fleet, stop_all
from tests.integration.test_prompt import empty_image, slow_graph
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(600)
ENV = {
    "ADMIN_API_KEYS": f"ops:{ADMIN}",
    "API_KEYS": f"alice:{ALICE},bob:{BOB},solo:{SOLO},metered:{METERED}",
    "KEY_LIMITS": json.dumps(
        {"solo": {"max_jobs": 1}, "metered": {"requests_per_minute": 30, "burst": 4}}
    ),
    "PROMPT_WEBHOOK_RETRIES": "1",
}


@pytest.fixture(scope="module")
def duo(tmp_path_factory: pytest.TempPathFactory, redis: RedisServer) -> Iterator[list[Gateway]]:
    gateways = start_fleet(tmp_path_factory.mktemp("tenant-fleet"), 2, redis, **ENV)
    yield gateways
    stop_all(gateways)


def state(gateway: Gateway, key: str, job_id: str, **params: str) -> httpx.Response:
    with client(gateway, key) as c:
        return c.get(f"/prompt/{job_id}", params=params)


def status_of(gateway: Gateway, key: str, job_id: str) -> str | int:
    answer = state(gateway, key, job_id)
    return str(answer.json()["status"]) if answer.status_code == 200 else answer.status_code


def colour(b64: str) -> tuple[int, int, int]:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as image:
        rgb: tuple[int, int, int] = image.convert("RGB").getpixel((1, 1))
        return rgb


def running_on(duo: list[Gateway], redis: RedisServer, job_key: str) -> Gateway:
    """The gateway that took the job (its Redis key: `<owner>/<id>`), once it runs."""
    with redis.client() as c:
        eventually(
            lambda: c.hget(f"{NAME}:job:{job_key}", "status") == "running", 120, f"{job_key} runs"
        )
        consumer = str(c.hget(f"{NAME}:job:{job_key}", "gateway"))
    pid = int(consumer.split("-")[-2])
    return next(g for g in duo if g.pid == pid)


def assert_not_found(answer: httpx.Response) -> None:
    """A 404 in the gateway's shape that names no key, nor any key's name."""
    assert answer.status_code == 404, answer.text
    assert answer.json()["code"] == "not_found"
    for secret in (*SECRETS, "alice", "key-"):
        assert secret not in answer.text


def events_of(gateway: Gateway, key: str, job_id: str, **params: str) -> list[tuple[str, Any]]:
    """The job's SSE stream read to its end: [(type, data)]."""
    found: list[tuple[str, Any]] = []
    with (
        client(gateway, key) as c,
        c.stream("GET", f"/prompt/{job_id}/events", params=params, timeout=300) as answer,
    ):
        assert answer.status_code == 200
        kind = ""
        for line in answer.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: ") and kind:
                found.append((kind, json.loads(line.removeprefix("data: "))))
    return found


def key_jobs(duo: list[Gateway], key: str, outcome: str) -> float:
    """comfy_gateway_key_jobs_total of a key, summed over the fleet's gateways."""
    series = f'comfy_gateway_key_jobs_total{{key="{key}",outcome="{outcome}"}} '
    total = 0.0
    for gateway in duo:
        text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
        total += sum(
            float(line.split()[-1]) for line in text.splitlines() if line.startswith(series)
        )
    return total


def test_two_keys_use_one_id_through_two_gateways_and_each_gets_its_own_job(
    duo: list[Gateway], redis: RedisServer, receiver: Receiver
) -> None:
    order = f"order-{uuid.uuid4().hex[:6]}"  # a guessable id, as clients choose them
    before = key_jobs(duo, "alice", "succeeded"), key_jobs(duo, "bob", "succeeded")

    def submit(gateway: Gateway, key: str, rgb: int, hook: str) -> httpx.Response:
        body = {"prompt": empty_image(rgb), "id": order, "webhook_v2": receiver.url(hook)}
        with client(gateway, key) as c:
            return c.post("/prompt", json=body)

    with ThreadPoolExecutor(2) as threads:
        hers = threads.submit(submit, duo[0], ALICE, 0xFF0000, "/same-alice")
        his = threads.submit(submit, duo[1], BOB, 0x0000FF, "/same-bob")
        assert hers.result().status_code == his.result().status_code == 202
    (alice_done,) = receiver.wait_for("/same-alice", 1, timeout_s=120)
    (bob_done,) = receiver.wait_for("/same-bob", 1, timeout_s=120)
    assert (alice_done.json()["id"], alice_done.json()["metadata"]) == (
        order,
        {"key_name": "alice"},
    )
    assert (bob_done.json()["id"], bob_done.json()["metadata"]) == (order, {"key_name": "bob"})
    assert colour(alice_done.json()["images"][0]) == (255, 0, 0)
    assert colour(bob_done.json()["images"][0]) == (0, 0, 255)

    for gateway in duo:  # each key reads its own job, through either gateway
        for key, rgb in ((ALICE, (255, 0, 0)), (BOB, (0, 0, 255))):
            answer = state(gateway, key, order)
            assert answer.status_code == 200, answer.text
            assert answer.json()["status"] == "succeeded"
            assert answer.json()["owner"] is None  # only admins see owners
            assert colour(answer.json()["result"]["images"][0]) == rgb

    # The admin key: two keys have used the id, so it names the one it means.
    ambiguous = state(duo[1], ADMIN, order)
    assert ambiguous.status_code == 409 and ambiguous.json()["location"] == "owner"
    theirs = state(duo[1], ADMIN, order, owner="alice").json()
    assert (theirs["owner"], colour(theirs["result"]["images"][0])) == ("alice", (255, 0, 0))
    assert state(duo[0], ADMIN, order, owner="bob").json()["owner"] == "bob"

    with redis.client() as c:  # the owner is part of each job's key, and of its spec
        for owner in ("alice", "bob"):
            spec = json.loads(str(c.hget(f"{NAME}:job:{owner}/{order}", "spec")))
            assert (spec["id"], spec["owner"]) == (order, owner)
        assert not c.exists(f"{NAME}:job:{order}")
        assert sorted(c.hkeys(f"{NAME}:owners:{order}")) == ["alice", "bob"]
    # The per-key metrics of the gateways that ran them count each key's job once.
    after = key_jobs(duo, "alice", "succeeded"), key_jobs(duo, "bob", "succeeded")
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)


def test_another_keys_job_is_an_unknown_id_on_every_gateway_and_the_admin_reaches_it(
    duo: list[Gateway], redis: RedisServer, receiver: Receiver
) -> None:
    mine, his, waiting = (f"{name}-{uuid.uuid4().hex[:6]}" for name in ("mine", "his", "waiting"))
    with client(duo[0], ALICE) as alice:
        body = {"prompt": slow_graph(seed=201), "id": mine, "webhook_v2": receiver.url("/mine")}
        assert alice.post("/prompt", json=body).status_code == 202
    runner = running_on(duo, redis, f"alice/{mine}")
    with client(duo[1], BOB) as bob:  # the other gateway busy too: the next job waits in Redis
        body = {"prompt": slow_graph(seed=202), "id": his, "webhook_v2": receiver.url("/his")}
        assert bob.post("/prompt", json=body).status_code == 202
    running_on(duo, redis, f"bob/{his}")
    with client(duo[1], ALICE) as alice:
        body = {"prompt": empty_image(7), "id": waiting, "webhook_v2": receiver.url("/waiting")}
        assert alice.post("/prompt", json=body).status_code == 202
    assert status_of(duo[0], ALICE, waiting) == "queued"

    for gateway in duo:  # alice's running job and her queued one, through either gateway
        with client(gateway, BOB) as bob:
            unknown = bob.get("/prompt/no-such-order")
            assert_not_found(unknown)
            for job_id in (mine, waiting):
                for refused in (
                    bob.get(f"/prompt/{job_id}"),
                    bob.get(f"/prompt/{job_id}/events"),
                    bob.post("/interrupt", json={"id": job_id}),
                    bob.post("/interrupt", json={"id": job_id, "owner": "alice"}),  # admin-only
                    bob.get(f"/prompt/{job_id}", params={"owner": "alice"}),
                ):
                    assert_not_found(refused)
                # The same answer as for an id nobody used: no oracle.
                same = json.loads(unknown.text.replace("no-such-order", job_id))
                assert bob.get(f"/prompt/{job_id}").json() == same
                assert bob.get(f"/prompt/{job_id}/events").json() == same
            assert bob.get(f"/prompt/{his}").json()["status"] == "running"  # his own
    assert status_of(duo[1], ALICE, mine) == "running", "bob's interrupt reached alice's job"
    assert status_of(duo[1], ALICE, waiting) == "queued"

    # The admin key ends her queued job where the request lands (no gateway took it yet)...
    elsewhere = next(g for g in duo if g is not runner)
    with client(elsewhere, ADMIN) as admin:
        seen = admin.get(f"/prompt/{waiting}")  # one key has the id: no `owner` needed
        assert (seen.json()["status"], seen.json()["owner"]) == ("queued", "alice")
        assert admin.post("/interrupt", json={"id": waiting}).status_code == 200
    (ended,) = receiver.wait_for("/waiting", 1)
    assert ended.json()["code"] == "interrupted"
    assert ended.json()["metadata"] == {"key_name": "alice"}

    # ...and follows and interrupts her running one through the gateway that does not run it.
    with ThreadPoolExecutor(1) as threads:
        following = threads.submit(events_of, elsewhere, ADMIN, mine, owner="alice")
        with client(elsewhere, ADMIN) as admin:
            eventually(lambda: admin.get(f"/prompt/{mine}").json()["progress"]["value"] > 0)
            cancelled = admin.post("/interrupt", json={"id": mine, "owner": "alice"})
            assert cancelled.status_code == 200, cancelled.text
        events = following.result(timeout=120)
    assert events[0][0] == "queued" and "progress" in [kind for kind, _ in events]
    assert events[-1][0] == "failed" and events[-1][1]["code"] == "interrupted"
    (stopped,) = receiver.wait_for("/mine", 1)
    assert (stopped.json()["code"], stopped.json()["metadata"]) == (
        "interrupted",
        {"key_name": "alice"},
    )
    for gateway in duo:
        assert status_of(gateway, ALICE, mine) == "interrupted"
        assert status_of(gateway, ALICE, waiting) == "interrupted"
    with client(duo[0], BOB) as bob:  # bob ends his own, through either gateway
        assert bob.post("/interrupt", json={"id": his}).status_code == 200
    receiver.wait_for("/his", 1)


def test_max_jobs_counts_the_keys_jobs_in_the_whole_fleet(
    duo: list[Gateway], redis: RedisServer, receiver: Receiver
) -> None:
    first = f"solo-{uuid.uuid4().hex[:6]}"
    with client(duo[0], SOLO) as solo:
        body = {"prompt": slow_graph(seed=203), "id": first, "webhook_v2": receiver.url("/solo")}
        assert solo.post("/prompt", json=body).status_code == 202
    for gateway in duo:  # one job in the fleet is all solo may have, whichever gateway it asks
        with client(gateway, SOLO) as solo:
            refused = solo.post("/prompt", json={"prompt": empty_image(1)})
            assert refused.status_code == 429, refused.text
            assert refused.headers["retry-after"] == "5"
            assert refused.json()["code"] == "too_many_jobs"
            assert refused.json()["details"] == {"limit": "max_jobs", "max_jobs": 1}
    with client(duo[1], ALICE) as alice:  # another key is not held back by solo's limit
        assert alice.post("/prompt", json={"prompt": empty_image(2)}).status_code == 200
    with client(duo[1], SOLO) as solo:
        assert solo.post("/interrupt", json={"id": first}).status_code == 200
        receiver.wait_for("/solo", 1, timeout_s=120)
        again = solo.post("/prompt", json={"prompt": empty_image(3)})
        assert again.status_code == 200, again.text  # recovered once its job ended
    limited = 'comfy_gateway_key_limited_total{key="solo",limit="max_jobs"} '
    for gateway in duo:
        text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
        assert [line.split()[-1] for line in text.splitlines() if line.startswith(limited)] == [
            "1.0"
        ]
    with redis.client() as c:
        assert c.scard(f"{NAME}:active:solo") == 0


def test_a_keys_requests_per_minute_count_on_every_gateway_at_once(duo: list[Gateway]) -> None:
    """A burst of 4 and one request every 2 s, whichever gateway the requests reach: a bucket
    in each gateway would let 8 through."""
    clients = [client(gateway, METERED) for gateway in duo]
    try:
        answers = [clients[n % 2].get("/prompt/nothing-here") for n in range(5)]
        assert [a.status_code for a in answers] == [404] * 4 + [429]
        refused = answers[-1]
        assert refused.json()["details"]["limit"] == "requests_per_minute"
        retry_s = int(refused.headers["retry-after"])
        assert 1 <= retry_s <= 2
        assert clients[0].get("/prompt/nothing-here").status_code == 429  # the other gateway too
        time.sleep(retry_s)
        assert clients[1].get("/prompt/nothing-here").status_code == 404  # refilled for both
    finally:
        for c in clients:
            c.close()


def test_a_fleet_gateway_log_names_the_owner(duo: list[Gateway]) -> None:
    request_id = f"logged-{uuid.uuid4().hex[:6]}"
    with client(duo[0], BOB) as bob:
        answer = bob.post("/prompt", json={"prompt": empty_image(5), "id": request_id})
        assert answer.status_code == 200, answer.text
    logs = "".join(g.log_text() for g in duo)
    assert f"job {request_id} of key bob: queued in the fleet" in logs
    assert f"job {request_id} of key bob: submitting" in logs
    for secret in SECRETS:
        assert secret not in logs
