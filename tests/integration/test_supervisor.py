"""The gateway supervises its ComfyUI: restarts, crashes, timeouts, shutdown, refusals."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.integration.harness import (
    COMFY_HOME,
    Gateway,
    alive,
    eventually,
    free_port,
    graph,
    running,
)
from tests.integration.test_prompt import empty_image, post, slow_graph, wait_for_comfy_queue


@pytest.fixture(scope="module")
def restarting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    env = {"ALWAYS_RESTART_COMFYUI": "true", "PROMPT_TIMEOUT_S": "4", "MAX_QUEUE_DEPTH": "1"}
    with running(tmp_path_factory.mktemp("restarting"), **env) as gateway:
        yield gateway


def test_job_past_the_timeout_is_a_504_and_is_interrupted(restarting: Gateway) -> None:
    response = post(restarting, slow_graph(seed=3), "too-slow")
    assert response.status_code == 504, response.text
    assert response.json()["code"] == "timeout"
    assert "PROMPT_TIMEOUT_S" in response.json()["error"]
    wait_for_comfy_queue(restarting, running=0, timeout_s=20)


def test_full_queue_is_a_429_and_not_ready(restarting: Gateway) -> None:
    with ThreadPoolExecutor(1) as pool, restarting.client() as c:
        busy = pool.submit(post, restarting, slow_graph(seed=4), "busy")
        wait_for_comfy_queue(restarting, running=1)
        refused = c.post("/prompt", json={"prompt": empty_image(1)})
        assert refused.status_code == 429, refused.text
        assert refused.json()["code"] == "queue_full"
        assert refused.headers["Retry-After"]
        ready = c.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["queue_depth"] == 1
        assert "queue is full" in ready.json()["reason"]
        assert busy.result().status_code == 504
    wait_for_comfy_queue(restarting, running=0, timeout_s=20)


def test_comfyui_killed_mid_job_fails_the_job_and_comes_back(restarting: Gateway) -> None:
    old_pid = restarting.comfy_pid()
    with ThreadPoolExecutor(1) as pool, restarting.client() as c:
        job = pool.submit(post, restarting, slow_graph(seed=5), "doomed")
        wait_for_comfy_queue(restarting, running=1)
        os.kill(old_pid, signal.SIGKILL)
        failed = job.result(timeout=30)
        assert failed.status_code == 503, failed.text
        assert failed.json()["code"] == "comfy_unavailable"
        assert failed.headers["Retry-After"]

        ready = c.get("/ready")
        assert ready.status_code == 503
        assert c.get("/health").status_code == 200  # alive: restarting is not dying
        refused = c.post("/prompt", json={"prompt": empty_image(2)})
        assert refused.status_code == 503

        eventually(lambda: c.get("/ready").status_code == 200, 120, what="/ready after the restart")
        assert restarting.comfy_pid() != old_pid
        after = c.post("/prompt", json={"prompt": graph("g1_empty_save")})
        assert after.status_code == 200, after.text
    assert "restarting ComfyUI" in restarting.log_text()


def test_without_restart_a_comfyui_crash_stops_the_gateway(tmp_path: Path) -> None:
    with running(tmp_path) as gateway:
        comfy = gateway.comfy_pid()
        os.kill(comfy, signal.SIGKILL)
        assert gateway.wait_exit(60) == 1
        assert "ALWAYS_RESTART_COMFYUI is off" in gateway.log_text()


def test_sigterm_lets_the_running_job_finish_then_stops_comfyui(tmp_path: Path) -> None:
    # A grace period well past the job's length on a loaded 2-core machine (40 steps took 60 s
    # there): the test is about the order of shutdown, not about the default grace period.
    with running(tmp_path, SHUTDOWN_GRACE_S="180") as gateway:
        comfy = gateway.comfy_pid()
        medium = graph("t2i")
        medium["5"]["inputs"]["steps"] = 40
        with ThreadPoolExecutor(1) as pool:
            job = pool.submit(post, gateway, medium, "finishing")
            wait_for_comfy_queue(gateway, running=1)
            os.kill(gateway.pid, signal.SIGTERM)
            response = job.result(timeout=180)
        assert response.status_code == 200, response.text
        assert gateway.wait_exit(60) == 0
        assert not alive(comfy)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{gateway.url}/health")


def test_probes_say_starting_then_sigkill_takes_comfyui_down_too(tmp_path: Path) -> None:
    gateway = Gateway(tmp_path).start(wait=False)
    try:
        # The port opens at once; the probes answer 503 until ComfyUI is up.
        first: list[httpx.Response] = []
        eventually(lambda: first.extend(probe(gateway)) or first, 30, what="the port to open")
        health, ready = first
        assert health.status_code == 503, health.text
        assert health.json()["status"] == "starting"
        assert ready.status_code == 503
        assert ready.json()["reason"] == "starting"
        refused = httpx.post(f"{gateway.url}/prompt", json={"prompt": empty_image(3)})
        assert refused.status_code == 503
        assert refused.json()["code"] == "comfy_unavailable"
        gateway.wait_healthy()

        comfy = gateway.comfy_pid()
        os.kill(gateway.pid, signal.SIGKILL)
        gateway.wait_exit(10)
        eventually(lambda: not alive(comfy), 10, what="ComfyUI to die with its parent")
    finally:
        gateway.stop()


def probe(gateway: Gateway) -> list[httpx.Response]:
    """/health and /ready, or nothing while the port is still closed."""
    try:
        return [httpx.get(f"{gateway.url}/health"), httpx.get(f"{gateway.url}/ready")]
    except httpx.ConnectError:
        return []


def test_second_gateway_refuses_the_first_ones_comfyui_port(
    tmp_path: Path, gateway: Gateway
) -> None:
    second = Gateway(tmp_path, COMFYUI_PORT_HOST=str(gateway.comfy_port)).start(wait=False)
    assert second.wait_exit(60) == 1
    assert f"port {gateway.comfy_port} on 127.0.0.1 is already taken" in second.log_text()
    assert httpx.get(f"{gateway.url}/ready").status_code == 200  # the first is untouched


def test_occupied_comfyui_port_is_refused(tmp_path: Path) -> None:
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        port = stranger.getsockname()[1]
        gateway = Gateway(tmp_path, COMFYUI_PORT_HOST=str(port)).start(wait=False)
        assert gateway.wait_exit(60) == 1
    assert f"port {port} on 127.0.0.1 is already taken" in gateway.log_text()


def test_a_slow_comfyui_that_keeps_printing_is_waited_for(tmp_path: Path) -> None:
    """A cold start on a busy 2-core machine, or a GPU box importing custom nodes: 25 s of
    output before ComfyUI even starts. The old default (20 checks 1 s apart) gave up."""
    port = free_port()
    python = COMFY_HOME.parent / "venv" / "bin" / "python"
    comfyui = f"exec {python} main.py --cpu --listen 127.0.0.1 --port {port} --disable-auto-launch"
    slow = f"for i in $(seq 25); do echo loading custom node $i; sleep 1; done; {comfyui}"
    gateway = Gateway(tmp_path, CMD=f"bash -c {shlex.quote(slow)}", COMFYUI_PORT_HOST=str(port))
    for default in ("STARTUP_CHECK_MAX_TRIES", "STARTUP_CHECK_INTERVAL_S"):
        del gateway.env[default]  # the settings a newcomer's `make run` has
    try:
        gateway.start(timeout_s=240)
        log = gateway.log_text()
        assert "still waiting for ComfyUI to answer" in log
        assert "loading custom node" in log.split("still waiting for ComfyUI", 1)[1]
    finally:
        gateway.stop()


def test_a_comfyui_that_prints_nothing_is_given_up(tmp_path: Path) -> None:
    silent = f'{sys.executable} -c "import time; time.sleep(120)"'
    gateway = Gateway(tmp_path, CMD=silent, STARTUP_SILENCE_MAX_S="3")
    del gateway.env["STARTUP_CHECK_MAX_TRIES"]
    gateway.start(wait=False)
    assert gateway.wait_exit(60) == 1
    assert "it has printed nothing for" in gateway.log_text()
    assert "STARTUP_SILENCE_MAX_S=3" in gateway.log_text()


@pytest.mark.parametrize(
    ("cmd", "expected"),
    [
        (f"{sys.executable} -c \"print('boom'); raise SystemExit(3)\"", "exited with code 3"),
        (f'{sys.executable} -c "import time; time.sleep(60)"', "did not answer"),
    ],
)
def test_comfyui_that_never_comes_up_fails_start_up_with_its_log(
    tmp_path: Path, cmd: str, expected: str
) -> None:
    gateway = Gateway(
        tmp_path, CMD=cmd, STARTUP_CHECK_MAX_TRIES="4", STARTUP_CHECK_INTERVAL_S="0.25"
    ).start(wait=False)
    assert gateway.wait_exit(60) == 1
    log = gateway.log_text()
    assert expected in log
    if "boom" in cmd:
        assert "boom" in log.split(expected, 1)[1]  # ComfyUI's last lines are quoted
