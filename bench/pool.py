"""A pool of ComfyUI instances: throughput with 1 and 2 instances, and the scheduler's own cost.

    .venv/bin/python -m bench.pool [--jobs 24] [--steps 8] [--placements 100000]

1. Throughput: a gateway with COMFYUI_INSTANCES=1, then one with 2, each running the same
   CPU-bound graph (the tiny SD1.5 txt2img at 256 px) from 4 concurrent clients; jobs per second
   after two warm-up jobs per instance. On a machine with fewer cores than instances want, the
   instances share the cores: the figure says what the pool costs or gains there.
2. Scheduling overhead: place and release jobs on in-memory instances, as the runner does for
   every job, and divide; the target is under 0.2 ms per job.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.jobs.scheduler import Scheduler
from bench.measure import progress
from tests.gateway_process import ROOT, GatewayProcess

TARGET_SCHEDULING_MS = 0.2


def txt2img(seed: int, steps: int) -> dict[str, Any]:
    graph: dict[str, Any] = json.loads((ROOT / "tests" / "graphs" / "t2i.json").read_text())
    graph["4"]["inputs"].update(width=256, height=256)
    graph["5"]["inputs"].update(seed=seed, steps=steps)
    return graph


async def throughput(instances: int, jobs: int, steps: int) -> float:
    """Jobs per second through a gateway of `instances` ComfyUIs, 4 clients at once."""
    with tempfile.TemporaryDirectory(prefix="bench-pool-") as workdir:
        gateway = GatewayProcess(
            Path(workdir), LOG_LEVEL="warning", COMFYUI_INSTANCES=str(instances)
        )
        await asyncio.to_thread(gateway.start, timeout_s=300)
        try:
            async with httpx.AsyncClient(base_url=gateway.url, timeout=600) as http:

                async def one(seed: int) -> None:
                    answer = await http.post("/prompt", json={"prompt": txt2img(seed, steps)})
                    answer.raise_for_status()

                await asyncio.gather(*(one(10_000 + n) for n in range(2 * instances)))  # warm-up
                slots = asyncio.Semaphore(4)

                async def limited(seed: int) -> None:
                    async with slots:
                        await one(seed)

                started = time.perf_counter()
                await asyncio.gather(*(limited(n) for n in range(jobs)))
                return jobs / (time.perf_counter() - started)
        finally:
            await asyncio.to_thread(gateway.stop)


@dataclass(eq=False)
class Box:
    index: int
    jobs: set[str] = field(default_factory=set)
    models: frozenset[str] = frozenset()
    idle_since: float = 0.0
    accepting: bool = True
    comfy_queue: int = 0


async def scheduling_ms(placements: int) -> tuple[float, float]:
    """Milliseconds per job the scheduler spends: (a free instance, a wait in its queue)."""
    boxes = [Box(i) for i in range(3)]
    scheduler: Scheduler[Box] = Scheduler(boxes)
    models = frozenset({"sdxl.safetensors"})
    started = time.perf_counter()
    for n in range(placements):
        box = scheduler.try_place(f"job-{n}", models)
        assert box is not None
        scheduler.release(box, f"job-{n}")
    free_ms = (time.perf_counter() - started) * 1000 / placements
    for box in boxes:
        box.jobs.add("busy")
    waits = placements // 10
    started = time.perf_counter()
    for n in range(waits):  # every job waits in the queue, then takes the instance that frees
        waiting = asyncio.ensure_future(scheduler.place(f"wait-{n}", models))
        await asyncio.sleep(0)
        scheduler.release(boxes[n % 3], "busy")
        box = await waiting
        scheduler.release(box, f"wait-{n}")
        box.jobs.add("busy")
    return free_ms, (time.perf_counter() - started) * 1000 / waits


async def main(args: argparse.Namespace) -> int:
    free_ms, queued_ms = await scheduling_ms(args.placements)
    rates = {}
    for count in (1, 2):
        progress(f"throughput with {count} instance(s): {args.jobs} jobs of {args.steps} steps")
        rates[count] = await throughput(count, args.jobs, args.steps)
    print(f"\nScheduling overhead per job (target < {TARGET_SCHEDULING_MS} ms)")
    print(f"  an instance was free:        {free_ms:.4f} ms")
    print(f"  the job waited in the queue: {queued_ms:.4f} ms")
    print(f"\nThroughput, tiny SD1.5 txt2img 256 px x {args.steps} steps, 4 clients")
    for count, rate in rates.items():
        print(f"  {count} instance(s): {rate:6.2f} jobs/s  ({rate / rates[1]:.2f}x)")
    print(f"  cores here: {len(os.sched_getaffinity(0))}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--placements", type=int, default=100_000)
    sys.exit(asyncio.run(main(parser.parse_args())))
