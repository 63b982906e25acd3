"""A fleet: what fleet mode adds to each job, and throughput with 1, 2 and 3 gateways on one Redis.

    .venv/bin/python -m bench.fleet [--requests 300] [--jobs 24] [--steps 8]  # --jobs 0: only 1.

Starts its own redis-server (Debian's; `make redis`) on a free loopback port.

1. Added cost per job: the trivial graph (EmptyImage 64x64 -> SaveImage) one request at a time,
   alternating between three paths in one run: directly against ComfyUI, through a lone gateway
   (the in-process queue), and through a fleet gateway (QUEUE_URL: accepted into Redis, pulled,
   run, its outcome read back from Redis). Median and p99 of each; fleet mode's added cost is
   its figure minus the lone gateway's.
2. Throughput: 1, 2 and 3 fleet gateways (one ComfyUI each) on one Redis, the tiny SD1.5 txt2img
   at 256 px from 2 clients per gateway, spread round-robin; jobs per second after warm-up, and
   a lone gateway's (in-process queue) for comparison. Each ComfyUI gets its share of the
   cores (OMP_NUM_THREADS); on a machine with fewer cores than ComfyUIs they share them, so
   the figures say what the queue costs there, not what more GPUs would give.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from app.comfy.process import usable_cores
from bench.clients import BenchClient, DirectClient, GatewayClient
from bench.measure import progress
from bench.pool import txt2img
from tests.gateway_process import GatewayProcess
from tests.redis_server import RedisServer


@contextlib.asynccontextmanager
async def gateways(
    workdir: Path, count: int, redis: RedisServer | None
) -> AsyncIterator[list[GatewayProcess]]:
    """`count` gateways (on `redis` when given, else lone ones), started side by side."""
    queue = {"QUEUE_URL": redis.url} if redis is not None else {}
    # Each ComfyUI gets its share of the cores: torch starts one thread per core, and several
    # ComfyUIs on the same cores then spin against each other (measured on 2 cores: two
    # gateways at 2 threads each ran 0.27 jobs/s, at 1 thread each 0.59; one alone 0.57).
    threads = str(max(1, usable_cores() // count))
    started = [
        GatewayProcess(
            workdir / f"gateway-{n}-{time.monotonic_ns()}",
            LOG_LEVEL="warning",
            OMP_NUM_THREADS=threads,
            **queue,
        )
        for n in range(count)
    ]
    try:
        for gateway in started:
            gateway.start(wait=False)
        for gateway in started:
            await asyncio.to_thread(gateway.wait_healthy, 300)
        yield started
    finally:
        for gateway in started:
            await asyncio.to_thread(gateway.stop)


def quantiles_ms(samples: list[float]) -> tuple[float, float]:
    """(median, p99) in milliseconds."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p99 * 1000


async def added_cost(workdir: Path, redis: RedisServer, requests: int) -> dict[str, list[float]]:
    """Seconds per request on each path, alternating request by request."""
    async with (
        gateways(workdir, 1, None) as (lone,),
        gateways(workdir, 1, redis) as (fleet,),
    ):
        direct = DirectClient(lone.comfy_url, lone.output_dir)
        await direct.open()
        paths: dict[str, BenchClient] = {
            "direct ComfyUI": direct,
            "lone gateway": GatewayClient(lone.url),
            "fleet gateway": GatewayClient(fleet.url),
        }
        samples: dict[str, list[float]] = {name: [] for name in paths}
        try:
            for _ in range(10):  # warm-up, unmeasured
                for client in paths.values():
                    await client.request()
            for n in range(requests):
                if n % 50 == 0:
                    progress(f"  request {n} of {requests} on each path")
                for name, client in paths.items():
                    await client.request()
                    samples[name].append(client.last_s)
        finally:
            await direct.close()
            for client in paths.values():
                if isinstance(client, GatewayClient):
                    await client.close()
        return samples


async def throughput(
    workdir: Path, count: int, redis: RedisServer | None, jobs: int, steps: int
) -> float:
    """Jobs per second through `count` gateways, 2 clients per gateway, round-robin."""
    async with gateways(workdir, count, redis) as fleet:
        clients = [httpx.AsyncClient(base_url=g.url, timeout=600) for g in fleet]
        turn = itertools.cycle(clients)
        try:

            async def one(seed: int) -> None:
                answer = await next(turn).post("/prompt", json={"prompt": txt2img(seed, steps)})
                answer.raise_for_status()

            await asyncio.gather(*(one(10_000 + n) for n in range(2 * count)))  # warm-up
            slots = asyncio.Semaphore(2 * count)

            async def limited(seed: int) -> None:
                async with slots:
                    await one(seed)

            started = time.perf_counter()
            await asyncio.gather(*(limited(n) for n in range(jobs)))
            return jobs / (time.perf_counter() - started)
        finally:
            for client in clients:
                await client.aclose()


async def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as folder:
        workdir = Path(folder)
        redis = RedisServer(workdir / "redis").start()
        try:
            progress(f"added cost: {args.requests} requests on each of three paths, alternating")
            samples = await added_cost(workdir, redis, args.requests)
            rates: dict[str, float] = {}
            if args.jobs:
                progress(f"throughput: {args.jobs} txt2img jobs of {args.steps} steps per run")
                rates["lone gateway"] = await throughput(workdir, 1, None, args.jobs, args.steps)
            for count in (1, 2, 3) if args.jobs else ():
                progress(f"  {count} fleet gateway(s)")
                rates[f"{count} fleet gateway(s)"] = await throughput(
                    workdir, count, redis, args.jobs, args.steps
                )
        finally:
            redis.stop()
    direct_median, direct_p99 = quantiles_ms(samples["direct ComfyUI"])
    lone_median, lone_p99 = quantiles_ms(samples["lone gateway"])
    print(f"\nPer job, trivial graph, {args.requests} sequential requests per path (ms)")
    print(f"  {'path':<16}{'median':>9}{'p99':>9}{'median/direct':>15}")
    for name, values in samples.items():
        median, p99 = quantiles_ms(values)
        print(f"  {name:<16}{median:9.2f}{p99:9.2f}{median / direct_median:14.2f}x")
    fleet_median, fleet_p99 = quantiles_ms(samples["fleet gateway"])
    print(
        f"  fleet mode adds {fleet_median - lone_median:+.2f} ms (median), "
        f"{fleet_p99 - lone_p99:+.2f} ms (p99) to the lone gateway; "
        f"direct p99 {direct_p99:.2f} ms"
    )
    if not rates:
        return 0
    print(f"\nThroughput, tiny SD1.5 txt2img 256 px x {args.steps} steps, 2 clients per gateway")
    base = rates["1 fleet gateway(s)"]
    for name, rate in rates.items():
        print(f"  {name:<20}{rate:7.3f} jobs/s  ({rate / base:.2f}x one fleet gateway)")
    print(f"  cores here: {len(os.sched_getaffinity(0))}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--steps", type=int, default=8)
    sys.exit(asyncio.run(main(parser.parse_args())))
