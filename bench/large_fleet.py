"""Two fleet gateways on one redis-server, where one runs every job and the other answers.

Both gateways have a ComfyUI, as every fleet gateway does, but the answering one's is held
busy: a prompt sent to it directly (outside the gateway) waits in LoadLatent's cache check,
reading a named pipe that nothing writes. A fleet gateway pulls a job only while its ComfyUI's
queue is empty, so every job submitted to the answering gateway runs on the other one, and its
answer crosses the fleet (Redis, or the internal endpoint). Which gateway ran each job is read
back from Redis and printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.large_paths import TIMEOUT, Graph, PathFailed, streamed
from bench.latent_noise import latent_graph
from tests.gateway_process import GatewayProcess
from tests.redis_server import RedisServer

HOLD = "hold.latent"  # the named pipe in the answering gateway's input folder


@dataclass
class Fleet:
    runner: GatewayProcess
    answerer: GatewayProcess
    redis: RedisServer


@contextlib.asynccontextmanager
async def fleet(workdir: Path, **env: str) -> AsyncIterator[Fleet]:
    """Redis and two gateways on it, the answerer's ComfyUI held busy while the block runs."""
    redis = RedisServer(workdir / "redis").start()
    settings = {
        "QUEUE_URL": redis.url,
        "OMP_NUM_THREADS": "1",
        **env,
    }
    runner = GatewayProcess(workdir / "fleet-runner", **settings)
    answerer = GatewayProcess(workdir / "fleet-answerer", **settings)
    try:
        for gateway in (runner, answerer):
            gateway.start(wait=False)
        for gateway in (runner, answerer):
            await asyncio.to_thread(gateway.wait_healthy, 300)
        os.mkfifo(answerer.input_dir / HOLD)
        await hold(answerer.comfy_url)
        try:
            yield Fleet(runner, answerer, redis)
        finally:
            await release(answerer)
    finally:
        for gateway in (runner, answerer):
            await asyncio.to_thread(gateway.stop)
        redis.stop()


async def queue_length(http: httpx.AsyncClient) -> int:
    queue = (await http.get("/queue")).json()
    return len(queue["queue_running"]) + len(queue["queue_pending"])


async def hold(comfy_url: str) -> None:
    """Send the prompt that waits on the pipe; return once ComfyUI runs it and has told its
    gateway (a status event over the websocket)."""
    async with httpx.AsyncClient(base_url=comfy_url, timeout=30) as http:
        answer = await http.post("/prompt", json={"prompt": latent_graph(HOLD, "hold")})
        if answer.status_code != 200:
            raise PathFailed(f"the hold prompt: {answer.status_code} {answer.text[:300]}")
        deadline = time.monotonic() + 30
        while not (await http.get("/queue")).json()["queue_running"]:
            if time.monotonic() > deadline:
                raise PathFailed("the hold prompt did not start")
            await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)


async def release(answerer: GatewayProcess) -> None:
    """End the hold prompt: interrupted, and each open of the pipe given an end of file."""
    pipe = answerer.input_dir / HOLD
    async with httpx.AsyncClient(base_url=answerer.comfy_url, timeout=10) as http:
        with contextlib.suppress(httpx.HTTPError):
            await http.post("/interrupt")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):  # ENXIO: nothing reads the pipe now
                os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
            with contextlib.suppress(httpx.HTTPError):
                if await queue_length(http) == 0:
                    return
            await asyncio.sleep(0.2)


def ran_on(fleet: Fleet, job_id: str) -> str:
    """Which gateway took the job, by the pid in its consumer name (host-pid-suffix)."""
    with fleet.redis.client() as client:
        for key in client.scan_iter(f"*:job:*{job_id}"):
            consumer = client.hget(key, "gateway")
            if consumer:
                pid = int(str(consumer).split("-")[-2])
                return {fleet.runner.pid: "runner", fleet.answerer.pid: "answerer"}.get(pid, "?")
    return "unknown"


async def fleet_sync(http: httpx.AsyncClient, fleet: Fleet, graph: Graph) -> tuple[int, str]:
    """POST /prompt on the answering gateway; the bytes, and which gateway ran the job."""
    job_id = str(uuid.uuid4())
    size = await streamed(
        http,
        "POST",
        f"{fleet.answerer.url}/prompt",
        json={"prompt": graph, "id": job_id},
        timeout=TIMEOUT,
    )
    return size, ran_on(fleet, job_id)
