"""A fleet: real gateways (each with its own ComfyUI on CPU) sharing one real redis-server.

Three gateways take 60 mixed jobs round-robin; any gateway reads, follows and interrupts any
job; a checkpoint named by URL is downloaded by the gateway that runs the job, into its own
model cache; the CLI and the AUTOMATIC1111 facade work unchanged. A second fleet of two gateways
takes the blows: kill -9 of the gateway running a job, SIGTERM with jobs running and queued,
Redis stopped for 10 s, Redis killed and restarted from its append-only file.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import webuiapi
from PIL import Image

from tests.integration.conftest import seed_inputs
from tests.integration.fileserver import FileServer
from tests.integration.harness import GRAPHS, MODELS, ROOT, Gateway, eventually, graph
from tests.integration.receiver import Receiver
from tests.integration.test_priority import (
    RUN_ORDER,
    SUBMITTED,
    color_of,
    run_behind_a_busy_job,
    started_order,
)
from tests.integration.test_prompt import empty_image
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(600)
NAME = "comfy-gateway"  # QUEUE_NAME's default


def start_fleet(workdir: Path, count: int, redis: RedisServer, **env: str) -> list[Gateway]:
    """`count` gateways on one Redis, started side by side."""
    gateways = [new_gateway(workdir, i, redis, **env) for i in range(count)]
    for gateway in gateways:
        gateway.start(wait=False)
    for gateway in gateways:
        gateway.wait_healthy(300)
    return gateways


def new_gateway(workdir: Path, index: int, redis: RedisServer, **env: str) -> Gateway:
    folder = workdir / f"gateway-{index}-{time.monotonic_ns()}"
    (folder / "input").mkdir(parents=True)
    seed_inputs(folder / "input")
    # The webhook receivers and the model file server listen on 127.0.0.1, refused by default.
    # Each gateway downloads models into a cache of its own, as on machines of their own.
    gateway = Gateway(
        folder,
        QUEUE_URL=redis.url,
        ALLOWED_PRIVATE_NETWORKS="127.0.0.1/32",
        MODEL_CACHE_DIR=str(model_cache(folder)),
        **env,
    )
    # The others fetch the outputs of the jobs it ran from it, on loopback here.
    gateway.env.setdefault("FLEET_ADVERTISE_URL", gateway.url)
    return gateway


def model_cache(folder: Path) -> Path:
    return folder / "model-cache"


def stop_all(gateways: list[Gateway]) -> None:
    for gateway in gateways:
        gateway.stop()


def runner_of(redis: RedisServer, job_id: str) -> int | None:
    """The pid of the gateway that took the job (its consumer name is host-pid-suffix)."""
    with redis.client() as client:
        consumer = client.hget(f"{NAME}:job:{job_id}", "gateway")
    return int(str(consumer).split("-")[-2]) if consumer else None


def running_on(gateways: list[Gateway], redis: RedisServer, job_id: str) -> Gateway:
    """The gateway running the job, once it runs."""
    found: list[Gateway] = []

    def check() -> bool:
        pid = runner_of(redis, job_id)
        found[:] = [g for g in gateways if g.proc is not None and g.pid == pid]
        return bool(found) and status(found[0], job_id) == "running"

    eventually(check, 120, f"job {job_id} running on a gateway")
    return found[0]


def status(gateway: Gateway, job_id: str) -> str | int:
    with gateway.client(timeout_s=10) as c:
        answer = c.get(f"/prompt/{job_id}")
    return str(answer.json()["status"]) if answer.status_code == 200 else answer.status_code


def txt2img(steps: int, seed: int) -> dict[str, Any]:
    prompt = graph("t2i")
    prompt["5"]["inputs"].update(steps=steps, seed=seed)
    return prompt


def submit(gateway: Gateway, prompt: dict[str, Any], job_id: str, **extra: Any) -> httpx.Response:
    with gateway.client(timeout_s=300) as c:
        return c.post("/prompt", json={"prompt": prompt, "id": job_id, **extra})


def png_size(b64: str) -> tuple[int, int]:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as image:
        return image.size


def ended_webhooks(receiver: Receiver, path: str) -> Counter[str]:
    """How many terminal webhooks each job got at this path."""
    return Counter(d.json()["id"] for d in receiver.deliveries(path))


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory, redis: RedisServer) -> Iterator[list[Gateway]]:
    """Three gateways with the shipped workflows; FLEET_MAX_RESULT_MB, deprecated, is set small
    to show that it no longer bounds a result."""
    env = {
        "WORKFLOW_DIR": str(ROOT / "workflows"),
        "WARMUP_PROMPT_FILE": str(GRAPHS / "t2i.json"),
        "FLEET_MAX_RESULT_MB": "0.5",
    }
    gateways = start_fleet(tmp_path_factory.mktemp("trio"), 3, redis, **env)
    yield gateways
    stop_all(gateways)


def test_sixty_jobs_round_robin_each_answered_with_its_own_outputs_once(
    trio: list[Gateway], receiver: Receiver
) -> None:
    before = [jobs_run(g) for g in trio]

    def one(n: int) -> tuple[int, httpx.Response]:
        prompt = empty_image(n * 3, width=64 + n, height=32 + n, prefix=f"fleet-{n}")
        extra = {"webhook": receiver.url("/sixty")} if n % 2 else {}
        return n, submit(trio[n % 3], prompt, f"sixty-{n}", **extra)

    with ThreadPoolExecutor(20) as threads:
        answers = list(threads.map(one, range(60)))
    for n, answer in answers:
        if n % 2:
            assert answer.status_code == 202, answer.text
            assert answer.json()["id"] == f"sixty-{n}"
        else:
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["id"] == f"sixty-{n}"
            [image] = body["images"]
            assert png_size(image) == (64 + n, 32 + n)
            assert body["filenames"][0].startswith(f"fleet-{n}_")
    delivered = receiver.wait_for("/sixty", 30, timeout_s=120)
    time.sleep(1.0)  # a second delivery of any job would show up by now
    assert ended_webhooks(receiver, "/sixty") == Counter(f"sixty-{n}" for n in range(1, 60, 2))
    for delivery in delivered:
        n = int(delivery.json()["id"].split("-")[1])
        assert delivery.json()["event"] == "output.complete"
        assert png_size(delivery.json()["image"]) == (64 + n, 32 + n)
    ran = [jobs_run(g) - b for g, b in zip(trio, before, strict=True)]
    assert sum(ran) == 60
    assert all(count > 0 for count in ran), f"jobs per gateway: {ran}"
    with redis_client(trio) as client:
        assert client.xlen(f"{NAME}:jobs") == 0  # every job acknowledged and removed


def test_every_gateways_console_shows_the_fleets_finished_jobs_and_its_gateways(
    trio: list[Gateway],
) -> None:
    with ThreadPoolExecutor(3) as threads:  # one job through each gateway
        answers = list(
            threads.map(
                lambda n: submit(trio[n], empty_image(n, width=96, height=48), f"console-{n}"),
                range(3),
            )
        )
    assert [a.status_code for a in answers] == [200, 200, 200]
    views = []
    for gateway in trio:
        with gateway.client() as c:
            views.append(c.get("/console/state.json").json())
    for view in views:
        finished = {job["id"]: job for job in view["finished"]}
        assert {"console-0", "console-1", "console-2"} <= set(finished)  # the fleet's, all
        assert finished["console-1"]["status"] == "succeeded" and finished["console-1"]["thumbnail"]
        # The gateways that took the fleet's jobs, each once; this one says it is itself.
        assert [p["this"] for p in view["peers"]].count(True) <= 1
    names = {p["name"] for view in views for p in view["peers"]}
    assert names and all({p["name"] for p in view["peers"]} == names for view in views)
    with trio[2].client() as c:  # a job another gateway accepted, its image read from Redis
        thumb = c.get("/console/jobs/console-0/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.content)).size == (96, 48)


@contextlib.contextmanager
def redis_client(gateways: list[Gateway]) -> Iterator[Any]:
    import redis as redis_py

    client = redis_py.Redis.from_url(gateways[0].env["QUEUE_URL"], decode_responses=True)
    try:
        yield client
    finally:
        client.close()


def jobs_run(gateway: Gateway) -> int:
    with gateway.client(timeout_s=10) as c:
        return sum(i["jobs_run"] for i in c.get("/health").json()["instances"])


def sse_events(gateway: Gateway, job_id: str, last_event_id: int | None = None) -> list[Any]:
    """The job's event log, read from its SSE stream to its end: [(id, type, data)]. Latent
    previews are left out: they are not in the log (a late reader gets none), and a reader
    gets them only while the job runs."""
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    events: list[Any] = []
    with (
        gateway.client(timeout_s=120) as c,
        c.stream("GET", f"/prompt/{job_id}/events", headers=headers) as answer,
    ):
        assert answer.status_code == 200
        frame: dict[str, str] = {}
        for line in answer.iter_lines():
            if line.startswith(("id:", "event:", "data:")):
                field, _, value = line.partition(": ")
                frame[field.rstrip(":")] = value
            elif not line and "event" in frame:
                if frame["event"] != "preview":
                    events.append((int(frame["id"]), frame["event"], json.loads(frame["data"])))
                frame = {}
    return events


def test_state_events_and_resume_from_gateways_that_did_not_run_the_job(
    trio: list[Gateway], receiver: Receiver, redis: RedisServer
) -> None:
    answer = submit(trio[0], txt2img(40, 71), "elsewhere-1", webhook=receiver.url("/elsewhere"))
    assert answer.status_code == 202
    runner = running_on(trio, redis, "elsewhere-1")
    others = [g for g in trio if g is not runner]
    reader = others[-1]
    events = sse_events(reader, "elsewhere-1")
    types = [kind for _, kind, _ in events]
    assert types[0] == "queued" and types[-1] == "complete"
    # The same events, in the same order, as the gateway that ran the job serves them.
    assert sse_events(runner, "elsewhere-1") == events
    # ComfyUI 0.33 sends a step only 100 ms after the last (the first and last always): at
    # 64 px that skips steps, so only their order and ends are the same on both versions.
    steps = [data["value"] for _, kind, data in events if kind == "progress"]
    assert steps[0] == 1 and steps[-1] == 40 and steps == sorted(set(steps)), steps
    assert [number for number, _, _ in events] == sorted(number for number, _, _ in events)
    [image] = events[-1][2]["images"]
    assert png_size(image) == (64, 64)
    for other in others:
        with other.client() as c:
            state = c.get("/prompt/elsewhere-1").json()
        assert state["status"] == "succeeded"
        assert state["result"]["images"] == [image]
    middle = events[len(events) // 2][0]
    resumed = sse_events(others[0], "elsewhere-1", last_event_id=middle)
    assert [number for number, _, _ in resumed] == [n for n, _, _ in events if n > middle]
    with others[0].client() as c:
        assert (
            c.get(
                "/prompt/elsewhere-1/events", headers={"Last-Event-ID": str(events[-1][0])}
            ).status_code
            == 204
        )
    receiver.wait_for("/elsewhere", 1)


def test_interrupt_through_any_gateway_running_or_still_queued(
    trio: list[Gateway], receiver: Receiver, redis: RedisServer
) -> None:
    with ThreadPoolExecutor(3) as threads:
        slow = [
            threads.submit(submit, trio[n], txt2img(3000, 80 + n), f"busy-{n}") for n in range(3)
        ]
        runners = [running_on(trio, redis, f"busy-{n}") for n in range(3)]
        assert {g.pid for g in runners} == {g.pid for g in trio}  # one each: all are busy
        queued = submit(trio[0], empty_image(7), "queued-1", webhook=receiver.url("/queued"))
        assert queued.status_code == 202
        assert status(trio[1], "queued-1") == "queued"
        with trio[2].client() as c:
            assert c.post("/interrupt", json={"id": "queued-1"}).status_code == 200
            [failed] = receiver.wait_for("/queued", 1)
            assert failed.json()["event"] == "prompt.failed"
            assert failed.json()["code"] == "interrupted"
            for n in range(3):  # each through a gateway that does not run it
                elsewhere = next(g for g in trio if g is not runners[n])
                with elsewhere.client() as other:
                    assert other.post("/interrupt", json={"id": f"busy-{n}"}).status_code == 200
        for future in slow:
            answer = future.result(timeout=60)
            assert answer.status_code == 409, answer.text
            assert answer.json()["code"] == "interrupted"
    assert status(trio[0], "queued-1") == "interrupted"
    time.sleep(0.5)
    assert len(receiver.deliveries("/queued")) == 1
    with trio[1].client() as c:
        gone = c.post("/interrupt", json={"id": "busy-0"})
    assert gone.status_code == 404 and gone.json()["location"] == "id"


def test_a_large_output_arrives_byte_identical_from_a_gateway_that_did_not_run_the_job(
    trio: list[Gateway], redis: RedisServer
) -> None:
    """A few MiB of noise, past FLEET_MAX_RESULT_MB: Redis holds where it lies, and the gateway
    that answers streams it from the one that ran the job, whose files endpoint wants the
    fleet's secret."""
    pixels = os.urandom(1024 * 1024 * 3)
    for gateway in trio:  # whichever runs it finds it in its ComfyUI's input folder
        Image.frombytes("RGB", (1024, 1024), pixels).save(gateway.input_dir / "noise-big.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "noise-big.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "big"}},
    }
    with ThreadPoolExecutor(1) as threads:  # the answering gateway is busy: another runs it
        busy = threads.submit(submit, trio[0], txt2img(3000, 90), "busy-big")
        answering = running_on(trio, redis, "busy-big")
        answer = submit(answering, prompt, "big-1")
        with answering.client() as c:
            assert c.post("/interrupt", json={"id": "busy-big"}).status_code == 200
        assert busy.result(timeout=60).status_code == 409
    assert answer.status_code == 200, answer.text
    runner = next(g for g in trio if g.pid == runner_of(redis, "big-1"))
    assert runner is not answering
    [image] = answer.json()["images"]
    data = base64.b64decode(image)
    assert len(data) > 3 * 2**20  # past FLEET_MAX_RESULT_MB (0.5), answered all the same
    with Image.open(io.BytesIO(data)) as png:
        assert png.tobytes() == pixels
    with runner.client() as c:  # the very bytes the gateway that ran it has
        assert c.get("/prompt/big-1").json()["result"]["images"] == [image]
    with redis_client(trio) as client:
        last = client.xrevrange(f"{NAME}:events:big-1", count=1)[0][1]
        secret = client.get(f"{NAME}:secret")
    [meta] = json.loads(last["data"])["files"]
    assert len(last["data"]) < 2000 and meta["node"] == "2" and meta["size"] == len(data)
    url = meta["url"]
    assert url.startswith(runner.url)
    with httpx.Client(timeout=30) as c:
        for headers in ({}, {"X-Fleet-Secret": "not-the-fleets-secret"}):
            for asked in (url, url + "x"):  # a wrong secret learns nothing of the token
                refused = c.get(asked, headers=headers)
                assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
        assert c.get(url + "x", headers={"X-Fleet-Secret": secret}).status_code == 404
        assert c.get(url, headers={"X-Fleet-Secret": secret}).content == data
        assert "/internal/" not in c.get(f"{runner.url}/openapi.json").text


def test_a_checkpoint_by_url_is_downloaded_and_run_by_the_gateway_that_runs_the_job(
    trio: list[Gateway], redis: RedisServer
) -> None:
    tiny = MODELS / "checkpoints" / "tiny-sd15-random.safetensors"
    token = "fleet-model-token-3b81"
    files = FileServer("127.0.0.1")  # loopback: allowed by ALLOWED_PRIVATE_NETWORKS
    files.files["/private/fleet-ckpt.safetensors"] = tiny.read_bytes()
    url = files.url("/private/fleet-ckpt.safetensors")
    by_url = txt2img(2, 150)
    by_url["1"]["inputs"]["ckpt_name"] = url
    missing = txt2img(2, 151)
    missing["1"]["inputs"]["ckpt_name"] = files.url("/private/none.safetensors")
    credentials = {"model_credentials": {files.url("/private/"): token}}
    try:
        with ThreadPoolExecutor(1) as threads:
            # One gateway is busy (its only ComfyUI runs a long job): what it accepts, another
            # gateway of the fleet runs.
            busy = threads.submit(submit, trio[0], txt2img(3000, 152), "url-busy")
            acceptor = running_on(trio, redis, "url-busy")
            answer = submit(acceptor, by_url, "url-ckpt-1", **credentials)
            failed = submit(acceptor, missing, "url-missing-1", **credentials)
            with acceptor.client() as c:
                assert c.post("/interrupt", json={"id": "url-busy"}).status_code == 200
            assert busy.result(timeout=60).status_code == 409
    finally:
        files.close()
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["prompt"]["1"]["inputs"]["ckpt_name"] == "fleet-ckpt.safetensors"
    [image] = body["images"]
    assert png_size(image) == (64, 64)
    runner = next(g for g in trio if g.pid == runner_of(redis, "url-ckpt-1"))
    assert runner is not acceptor
    landed = model_cache(runner.workdir) / "checkpoints" / "fleet-ckpt.safetensors"
    assert landed.stat().st_size == tiny.stat().st_size
    for other in trio:  # downloaded once, by the gateway that ran the job, and only there
        if other is not runner:
            assert not list(model_cache(other.workdir).glob("checkpoints/*"))
    assert files.hits["/private/fleet-ckpt.safetensors"] == 1
    [asked] = files.requests_for("/private/fleet-ckpt.safetensors")
    assert asked.header("Authorization") == f"Bearer {token}"  # the job's, through Redis
    with runner.client() as c:
        cached = c.get("/models/cache").json()["models"]
    assert [(m["folder"], m["filename"]) for m in cached] == [
        ("checkpoints", "fleet-ckpt.safetensors")
    ]
    # A download that fails on the running gateway ends the job, reported everywhere.
    assert failed.status_code == 502, failed.text
    error = failed.json()
    assert (error["code"], error["location"]) == ("download_failed", "prompt.1.inputs.ckpt_name")
    for gateway in trio:
        assert status(gateway, "url-missing-1") == "failed"
        assert token not in gateway.log_text()


def test_the_cli_and_the_facades_work_unchanged(trio: list[Gateway], tmp_path: Path) -> None:
    graph_file = tmp_path / "graph.json"
    graph_file.write_text(json.dumps(txt2img(5, 91)))
    done = subprocess.run(
        [sys.executable, "-m", "app.tools.cli", "run", "--url", trio[2].url,
         "--graph", str(graph_file), "--out", str(tmp_path / "out"), "--id", "fleet-cli-1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [written] = [Path(line) for line in done.stdout.splitlines()]
    with Image.open(written) as image:
        assert image.size == (64, 64)
    assert "5/5" in done.stderr
    api = webuiapi.WebUIApi(host="127.0.0.1", port=trio[0].port, sampler="Euler a", steps=2)
    result = api.txt2img(prompt="a cat", width=64, height=72, seed=41, batch_size=2)
    assert [image.size for image in result.images] == [(64, 72), (64, 72)]
    assert result.info["all_seeds"] == [41, 42]
    with trio[1].client() as c:
        blocking = c.post("/api/v1/prompts", json=empty_image(0x102030, prefix="v1fleet"))
        assert blocking.status_code == 200, blocking.text
        image = c.get(blocking.json()["urls"][0])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(image.content)) as picture:
        assert picture.convert("RGB").getpixel((1, 1)) == (0x10, 0x20, 0x30)


# -- the blows ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def aof_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("fleet-aof"), appendonly=True).start()
    yield server
    server.stop()


class Pair:
    """Two gateways on a Redis that keeps an append-only file; a lost one is replaced."""

    def __init__(self, workdir: Path, redis: RedisServer) -> None:
        self.workdir = workdir
        self.redis = redis
        # Quick takeover, and a grace period long enough for a job to finish.
        self.env = {"JOB_VISIBILITY_TIMEOUT_S": "3", "SHUTDOWN_GRACE_S": "120"}
        self.gateways = start_fleet(workdir, 2, redis, **self.env)

    def replace(self, lost: Gateway) -> None:
        lost.stop()
        fresh = new_gateway(self.workdir, len(self.gateways), self.redis, **self.env)
        self.gateways[self.gateways.index(lost)] = fresh.start(timeout_s=300)

    def alive(self) -> list[Gateway]:
        return [g for g in self.gateways if g.proc is not None and g.proc.poll() is None]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, aof_redis: RedisServer) -> Iterator[Pair]:
    fleet = Pair(tmp_path_factory.mktemp("pair"), aof_redis)
    yield fleet
    stop_all(fleet.gateways)


def test_priorities_0_5_0_9_run_9_5_0_0_across_the_fleet(pair: Pair) -> None:
    """Both gateways busy; jobs of priorities 0, 5, 0, 9 queued through either; the one freed
    first takes them from Redis in the order 9, 5, 0, 0 (ComfyUI's history says when each began)."""
    first, second = pair.gateways
    with ThreadPoolExecutor(2) as pool, first.client() as c:
        slow = [txt2img(2000, 120 + n) for n in (0, 1)]
        busy = [pool.submit(submit, first, slow[n], f"prio-busy-{n}") for n in (0, 1)]
        runners = [running_on(pair.gateways, pair.redis, f"prio-busy-{n}") for n in (0, 1)]
        assert {g.pid for g in runners} == {first.pid, second.pid}
        positions = run_behind_a_busy_job(first, "prio-busy-0", c, [first, second])
        assert c.post("/interrupt", json={"id": "prio-busy-1"}).status_code == 200
        assert [b.result(timeout=60).status_code for b in busy] == [409, 409]
    assert positions == {name: place for place, name in enumerate(RUN_ORDER)}
    colors = {color_of(name): name for name, _ in SUBMITTED}
    assert started_order(runners[0].comfy_url, colors) == RUN_ORDER  # all ran there, in order


def test_redis_down_for_10_s_503s_meanwhile_and_every_accepted_job_ends(
    pair: Pair, receiver: Receiver
) -> None:
    hook = receiver.url("/outage")
    for n in range(3):
        gateway = pair.gateways[n % 2]
        assert submit(gateway, txt2img(60, 120 + n), f"outage-{n}", webhook=hook).status_code == 202
    with ThreadPoolExecutor(1) as threads:
        sync = threads.submit(submit, pair.gateways[1], empty_image(9), "outage-sync")
        running_on(pair.gateways, pair.redis, "outage-0")
        pair.redis.stop()
        down_since = time.monotonic()
        for gateway in pair.gateways:
            with gateway.client(timeout_s=20) as c:
                refused = c.post("/prompt", json={"prompt": empty_image(3), "id": "during"})
                assert refused.status_code == 503, refused.text
                assert refused.headers["retry-after"] == "5"
                assert "Redis" in refused.json()["error"]
                eventually(lambda c=c: c.get("/ready").status_code == 503, 15, "/ready 503")
                assert "Redis" in c.get("/ready").json()["reason"]
                assert c.get("/health").status_code == 200  # not a reason to restart the pod
        time.sleep(max(0.0, 10 - (time.monotonic() - down_since)))
        pair.redis.start()
        answer = sync.result(timeout=240)
    assert answer.status_code == 200, answer.text
    receiver.wait_for("/outage", 3, timeout_s=240)
    time.sleep(1.0)
    assert ended_webhooks(receiver, "/outage") == Counter(f"outage-{n}" for n in range(3))
    assert all(g.proc is not None and g.proc.poll() is None for g in pair.gateways)
    for gateway in pair.gateways:
        eventually(lambda g=gateway: ready(g), 30, "/ready 200 again")


def ready(gateway: Gateway) -> bool:
    with gateway.client(timeout_s=10) as c:
        return c.get("/ready").status_code == 200


def test_redis_killed_and_restarted_from_its_aof_the_queued_jobs_run(
    pair: Pair, receiver: Receiver
) -> None:
    hook = receiver.url("/aof")
    for n in range(4):
        answer = submit(pair.gateways[0], txt2img(30, 130 + n), f"aof-{n}", webhook=hook)
        assert answer.status_code == 202, answer.text
    with pair.redis.client() as client:  # the jobs no gateway has taken (app.fleet.order)
        assert client.zcard(f"{NAME}:waiting") >= 2, "no job was still queued"
    pair.redis.stop(kill=True)
    time.sleep(2)
    pair.redis.start()
    receiver.wait_for("/aof", 4, timeout_s=300)
    time.sleep(1.0)
    assert ended_webhooks(receiver, "/aof") == Counter(f"aof-{n}" for n in range(4))
    for n in range(4):
        assert status(pair.gateways[1], f"aof-{n}") == "succeeded"


def test_kill_9_of_the_gateway_running_a_job_it_completes_on_the_other(
    pair: Pair, receiver: Receiver
) -> None:
    answer = submit(
        pair.gateways[0], txt2img(150, 101), "orphan-1", webhook=receiver.url("/orphan")
    )
    assert answer.status_code == 202
    victim = running_on(pair.gateways, pair.redis, "orphan-1")
    survivor = next(g for g in pair.gateways if g is not victim)
    with ThreadPoolExecutor(1) as threads:
        # A synchronous client of the same job, on the gateway that survives.
        waiting = threads.submit(sse_events, survivor, "orphan-1")
        time.sleep(0.5)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait_exit(30)
        events = waiting.result(timeout=300)
    assert events[-1][1] == "complete"
    assert any(kind == "queued" and data.get("attempt") == 2 for _, kind, data in events)
    assert runner_of(pair.redis, "orphan-1") == survivor.pid
    [delivered] = receiver.wait_for("/orphan", 1, timeout_s=120)
    assert delivered.json()["event"] == "output.complete"
    time.sleep(1.0)
    assert len(receiver.deliveries("/orphan")) == 1
    with pair.redis.client() as client:
        assert client.hget(f"{NAME}:job:orphan-1", "attempts") == "2"
    pair.replace(victim)


def test_sigterm_finishes_the_running_job_and_leaves_queued_ones_to_the_other(
    pair: Pair, receiver: Receiver
) -> None:
    """Runs last in this module: the gateway it stops is not replaced."""
    first, second = pair.gateways
    hook = receiver.url("/term")
    for n in range(3):  # one each running, one queued
        assert submit(first, txt2img(50, 110 + n), f"term-{n}", webhook=hook).status_code == 202
    runners = [running_on(pair.gateways, pair.redis, f"term-{n}") for n in range(2)]
    assert {g.pid for g in runners} == {first.pid, second.pid}
    leaving = runners[0]
    os.kill(leaving.pid, signal.SIGTERM)
    assert leaving.wait_exit(180) == 0
    # It finished its job before leaving: that job's webhook came from it, not a takeover.
    with pair.redis.client() as client:
        assert client.hget(f"{NAME}:job:term-0", "attempts") == "1"
        assert client.hget(f"{NAME}:job:term-0", "status") == "succeeded"
    receiver.wait_for("/term", 3, timeout_s=240)
    time.sleep(1.0)
    assert ended_webhooks(receiver, "/term") == Counter(f"term-{n}" for n in range(3))
    own = [line for line in leaving.log_text().splitlines() if " comfyui: " not in line]
    assert not [line for line in own if "Traceback" in line or " ERROR " in line]
