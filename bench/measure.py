"""Measuring: sequential latency (alternating the two paths), concurrent throughput, idle RSS."""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.clients import BenchClient, BenchError
from bench.procfs import process_cpu_s, rss_mib

WARMUP = 10

SETTLE_S = 2.0  # quiet time before an idle RSS reading

Call = Callable[[], Awaitable[None]]


@dataclass
class Target:
    """The gateway and ComfyUI under test; the PIDs (when known) are for RSS and CPU figures."""

    gateway_url: str
    comfy_url: str
    gateway_pid: int | None = None
    comfy_pid: int | None = None
    output_dir: Path | None = None

    def cpu_s(self) -> dict[str, float | None]:
        """CPU seconds so far: this client process (all threads), the gateway, ComfyUI."""
        return {
            "client": time.process_time(),
            "gateway": process_cpu_s(self.gateway_pid) if self.gateway_pid else None,
            "comfyui": process_cpu_s(self.comfy_pid) if self.comfy_pid else None,
        }


def cpu_ms_per_request(
    before: dict[str, float | None], after: dict[str, float | None], requests: int
) -> dict[str, float | None]:
    spent: dict[str, float | None] = {}
    for role, start in before.items():
        end = after[role]
        spent[role] = None if start is None or end is None else (end - start) * 1000 / requests
    return spent


@dataclass
class Latency:
    n: int
    median_ms: float
    p90_ms: float
    mean_ms: float


def latency(samples_s: list[float]) -> Latency:
    ms = [s * 1000 for s in samples_s]
    if not ms:
        return Latency(0, float("nan"), float("nan"), float("nan"))
    p90 = statistics.quantiles(ms, n=10, method="inclusive")[8] if len(ms) > 1 else ms[0]
    return Latency(len(ms), statistics.median(ms), p90, statistics.fmean(ms))


async def attempt(call: Call, errors: list[str]) -> bool:
    try:
        await call()
    except (BenchError, httpx.HTTPError, TimeoutError, ValueError) as e:
        errors.append(f"{type(e).__name__}: {e}"[:400])
        return False
    return True


async def sequential(
    clients: dict[str, BenchClient], errors: dict[str, list[str]], n: int
) -> tuple[dict[str, Latency], list[list[float]]]:
    """Alternate the paths request by request, so drift (caches, heap, load) hits all alike.

    Only rounds where every path succeeded count (failures are in `errors`). Returns each
    path's latency and those rounds (seconds, in the order of `clients`), for a paired interval.
    """
    times: dict[str, list[float]] = {path: [] for path in clients}
    rounds: list[list[float]] = []
    for i in range(WARMUP + n):
        this_round: list[float] = []
        for path, client in clients.items():
            if await attempt(client.request, errors[path]):
                this_round.append(client.last_s)
        if i < WARMUP:
            continue
        if len(this_round) == len(clients):
            rounds.append(this_round)
            for path, seconds in zip(clients, this_round, strict=True):
                times[path].append(seconds)
        done = i + 1 - WARMUP
        if done % 50 == 0:
            progress(f"sequential: {done}/{n} rounds")
    return {path: latency(samples) for path, samples in times.items()}, rounds


def median_difference_ci(
    rounds: list[list[float]], resamples: int = 2000
) -> tuple[float, float] | None:
    """95 % bootstrap interval (over rounds) of median(second path) - median(first), in ms."""
    if len(rounds) < 10:
        return None
    rng = random.Random(0)
    diffs = []
    for _ in range(resamples):
        sample = rng.choices(rounds, k=len(rounds))
        diffs.append(
            (statistics.median(r[1] for r in sample) - statistics.median(r[0] for r in sample))
            * 1000
        )
    low, high = statistics.quantiles(diffs, n=40, method="inclusive")[0::38]
    return low, high


async def throughput(
    call: Call, total: int, concurrency: int, errors: list[str]
) -> tuple[float, int]:
    """Requests per second of `total` requests from `concurrency` clients (failures excluded),
    and how many succeeded."""
    tickets = iter(range(total))
    ok = 0

    async def client() -> None:
        nonlocal ok
        for _ in tickets:
            succeeded = await attempt(call, errors)  # not `ok += await ...`: that loses counts
            ok += succeeded

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return ok / (time.perf_counter() - start), ok


@dataclass
class Round:
    req_per_s: float
    cpu_ms_per_request: dict[str, float | None]


async def concurrent(
    target: Target,
    clients: dict[str, BenchClient],
    errors: dict[str, list[str]],
    total: int,
    concurrency: int,
) -> dict[str, list[Round]]:
    """Two rounds of every path in turn (direct, gateway, direct, gateway), per path."""
    rounds: dict[str, list[Round]] = {path: [] for path in clients}
    for r in (1, 2):
        for path, client in clients.items():
            before = target.cpu_s()
            rate, ok = await throughput(client.request, total, concurrency, errors[path])
            cpu = cpu_ms_per_request(before, target.cpu_s(), max(ok, 1))
            rounds[path].append(Round(rate, cpu))
        progress(
            f"concurrent round {r}: "
            + ", ".join(f"{p} {rs[-1].req_per_s:.1f} req/s" for p, rs in rounds.items())
        )
    return rounds


async def idle_rss(pid: int | None) -> float | None:
    if pid is None:
        return None
    await asyncio.sleep(SETTLE_S)
    return rss_mib(pid)


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)
