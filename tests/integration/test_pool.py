"""A pool of two ComfyUI instances under one gateway, on CPU: spreading, ordering, model
affinity, an instance killed mid-job, recycling, shutdown, and no orphan."""

from __future__ import annotations

import base64
import io
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.integration.harness import MODELS, Gateway, alive, eventually, graph, running
from tests.integration.test_prompt import empty_image, post, slow_graph, wait_for_status

CHECKPOINTS = ("model-a.safetensors", "model-b.safetensors", "tiny-sd15-random.safetensors")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three checkpoint names, one tiny model: enough to see which instance loaded which."""
    folder = tmp_path_factory.mktemp("pool-models")
    (folder / "checkpoints").mkdir()
    for name in CHECKPOINTS:
        (folder / "checkpoints" / name).symlink_to(
            MODELS / "checkpoints" / "tiny-sd15-random.safetensors"
        )
    return folder


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory, models: Path) -> Iterator[Gateway]:
    env = {"COMFYUI_INSTANCES": "2", "ALWAYS_RESTART_COMFYUI": "true", "MODEL_DIR": str(models)}
    with running(tmp_path_factory.mktemp("pool"), **env) as gateway:
        yield gateway


@pytest.fixture
def client(pool: Gateway) -> Iterator[httpx.Client]:
    with pool.client() as c:
        yield c


def txt2img(checkpoint: str, *, steps: int = 2, seed: int = 1) -> dict[str, Any]:
    prompt = graph("t2i")
    prompt["1"]["inputs"]["ckpt_name"] = checkpoint
    prompt["5"]["inputs"].update(steps=steps, seed=seed)
    return prompt


def instance_of(client: httpx.Client, request_id: str) -> int:
    index: int = client.get(f"/prompt/{request_id}").json()["instance"]
    return index


def test_health_lists_both_instances(client: httpx.Client) -> None:
    instances = client.get("/health").json()["instances"]
    assert [(i["index"], i["state"]) for i in instances] == [(0, "ready"), (1, "ready")]
    assert instances[1]["port"] == instances[0]["port"] + 1
    metrics = client.get("/metrics").text
    assert 'comfy_gateway_comfyui_up{instance="1"} 1.0' in metrics


def test_each_instance_gets_its_share_of_the_cores(pool: Gateway) -> None:
    """torch starts a thread per core in each ComfyUI: two of them on the same cores would spin
    against each other, so each gets cores ÷ 2 (unless the environment names a count)."""
    cores = len(os.sched_getaffinity(0))
    expected = os.environ.get("OMP_NUM_THREADS") or str(max(1, cores // 2))
    for index in (0, 1):
        environ = Path(f"/proc/{pool.comfy_pid(index)}/environ").read_bytes().split(b"\0")
        assert f"OMP_NUM_THREADS={expected}".encode() in environ


def test_model_affinity_keeps_each_checkpoint_on_its_instance(client: httpx.Client) -> None:
    ran: dict[str, set[int]] = {"a": set(), "b": set()}
    for n in range(6):
        model = "ab"[n % 2]
        request_id = f"affinity-{n}"
        body = {"prompt": txt2img(f"model-{model}.safetensors", seed=n), "id": request_id}
        assert client.post("/prompt", json=body).status_code == 200
        ran[model].add(instance_of(client, request_id))
    assert len(ran["a"]) == len(ran["b"]) == 1, ran  # each model stayed on one instance
    assert ran["a"] != ran["b"]


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")


def test_concurrent_jobs_spread_over_both_and_get_their_own_outputs(pool: Gateway) -> None:
    colors = [0x010101 * (n * 15 + 10) for n in range(16)]

    def run(n: int) -> httpx.Response:
        prompt = empty_image(colors[n], width=96, height=96, prefix=f"spread{n}")
        prompt["3"] = {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}
        prompt["2"]["inputs"]["images"] = ["3", 0]
        return post(pool, prompt, f"spread-{n}")

    with ThreadPoolExecutor(16) as threads:
        answers = list(threads.map(run, range(16)))
    with pool.client() as c:
        used = {instance_of(c, f"spread-{n}") for n in range(16)}
    assert used == {0, 1}
    for n, answer in enumerate(answers):
        assert answer.status_code == 200, answer.text
        inverted = decode(answer.json()["images"][0]).getpixel((5, 5))
        expected = Image.new("RGB", (1, 1), colors[n]).getpixel((0, 0))
        # Its own colour (ImageInvert rounds by one); the next job's is 15 away.
        assert all(abs(255 - a - b) <= 1 for a, b in zip(inverted, expected, strict=True))


def test_a_long_job_does_not_delay_a_short_one(pool: Gateway, client: httpx.Client) -> None:
    with ThreadPoolExecutor(1) as threads:
        slow = threads.submit(post, pool, slow_graph(seed=51), "long-one")
        wait_for_status(client, "long-one", "running")
        started = time.monotonic()
        quick = client.post("/prompt", json={"prompt": empty_image(3), "id": "short-one"})
        assert quick.status_code == 200, quick.text
        assert not slow.done(), "the long job ended first"
        assert instance_of(client, "short-one") != instance_of(client, "long-one")
        assert time.monotonic() - started < 60
        assert client.post("/interrupt", json={"id": "long-one"}).status_code == 200
        assert slow.result(timeout=60).status_code == 409


def test_an_instance_killed_mid_job_the_job_completes_on_the_other(
    pool: Gateway, client: httpx.Client
) -> None:
    ready: list[int] = []
    with ThreadPoolExecutor(1) as threads:
        job = threads.submit(post, pool, txt2img(CHECKPOINTS[2], steps=60, seed=61), "doomed-1")
        wait_for_status(client, "doomed-1", "running")
        victim = instance_of(client, "doomed-1")
        os.kill(pool.comfy_pid(victim), signal.SIGKILL)
        while not job.done():
            ready.append(client.get("/ready").status_code)
            time.sleep(0.1)
        answer = job.result()
    assert answer.status_code == 200, answer.text  # run again, on the other instance
    assert decode(answer.json()["images"][0]).size == (64, 64)
    assert instance_of(client, "doomed-1") == 1 - victim
    assert set(ready) == {200}, "the pool stopped being ready while one instance restarted"

    def back() -> bool:
        instance = client.get("/health").json()["instances"][victim]
        return bool(instance["state"] == "ready" and instance["restarts"] == 1)

    eventually(back, 120, what=f"instance {victim} to come back")
    assert "running it again on another instance (attempt 2 of 2)" in pool.log_text()


def test_sigkill_of_the_gateway_takes_every_instance_down(pool: Gateway) -> None:
    """Runs last in this module: it kills the module's gateway."""
    comfyuis = [pool.comfy_pid(0), pool.comfy_pid(1)]
    os.kill(pool.pid, signal.SIGKILL)
    pool.wait_exit(10)
    eventually(lambda: not any(alive(pid) for pid in comfyuis), 15, what="both ComfyUIs to die")


# -- a second pool, recycling ---------------------------------------------------------------


@pytest.fixture(scope="module")
def recycling(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    env = {"COMFYUI_INSTANCES": "2", "RECYCLE_AFTER_JOBS": "2", "SHUTDOWN_GRACE_S": "60"}
    with running(tmp_path_factory.mktemp("recycling"), **env) as gateway:
        yield gateway


def test_recycling_after_n_jobs_fails_no_job(recycling: Gateway) -> None:
    def run(n: int) -> httpx.Response:
        return post(recycling, txt2img(CHECKPOINTS[2], steps=3, seed=n), f"recycled-{n}")

    with ThreadPoolExecutor(4) as threads:
        answers = list(threads.map(run, range(6)))
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    with recycling.client() as c:
        instances = c.get("/health").json()["instances"]
    assert sum(i["restarts"] for i in instances) >= 2, instances  # both ran >= 2 jobs
    assert sum(i["jobs_run"] for i in instances) == 6
    assert "will be recycled: it ran 2 jobs (RECYCLE_AFTER_JOBS)" in recycling.log_text()


def test_sigterm_with_jobs_on_both_instances_finishes_them(recycling: Gateway) -> None:
    """Runs last in this module: it stops the module's gateway."""
    with recycling.client() as c:
        # The last test's jobs may have left an instance recycling: both must be ready first.
        eventually(
            lambda: all(i["state"] == "ready" for i in c.get("/health").json()["instances"]),
            180,
            what="both instances ready after the last test's recycling",
        )
    with ThreadPoolExecutor(2) as threads, recycling.client() as c:
        jobs = [
            threads.submit(post, recycling, txt2img(CHECKPOINTS[2], steps=40, seed=n), f"term-{n}")
            for n in range(2)
        ]
        eventually(
            lambda: all(
                c.get(f"/prompt/term-{n}").json().get("status") == "running" for n in range(2)
            ),
            60,
            what="a job running on each instance",
        )
        code, left = recycling.stop()
        answers = [job.result(timeout=60) for job in jobs]
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert code == 0
    assert left == [], f"processes outlived the gateway: {left}"
