"""Peak memory of the gateway while it answers large outputs, on every path an output leaves by.

    .venv/bin/python -m bench.large_output [--sizes 16,64,256] [--paths sync,webhook,...]
                                           [--concurrent 4] [--json results.json]

The output is a model-free graph's (bench.latent_noise: LoadLatent of cached random float32 ->
SaveLatent), a file of exactly the size asked plus a short header. For each size and path it
resets the gateway's peak RSS (writing 5 to /proc/PID/clear_refs), runs one job, and reads the
peak (VmHWM) again: the growth is what answering that output cost the gateway at its worst.
Next to it, the wall time, and the same output taken straight from ComfyUI by a careful client
(websocket, then /view streamed) for a ratio. Then four outputs answered at once (sync
/prompt, all four answers open before any is read). Targets from the issue, PASS or MISS:
at most 32 MiB of growth per 256 MiB output on every path, 64 MiB for four at once.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from bench.large_fleet import Fleet, fleet, fleet_sync
from bench.large_paths import PATHS, TIMEOUT, PathFailed, direct, drain, sync_prompt
from bench.large_report import Row, print_report
from bench.latent_noise import latent_graph, link_input, noise_latent
from bench.measure import progress
from bench.procfs import loadavg
from bench.webhook_sink import WebhookSink
from tests.gateway_process import ROOT, GatewayProcess

T = TypeVar("T")
SECRET = base64.b64encode(b"bench-large-output-secret").decode()
SETTINGS = {
    "LOG_LEVEL": "warning",
    "ALLOWED_PRIVATE_NETWORKS": "127.0.0.1/32",  # the webhook sink listens on loopback
    "WEBHOOK_SECRET": f"whsec_{SECRET}",
    "WEBHOOK_TIMEOUT_S": "900",
    "JOB_TIMEOUT_S": "1800",
}
WARM_MIB = 1  # each path answers one output of this size first, unmeasured


def peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # the kernel's kB are KiB
    raise RuntimeError(f"no VmHWM for {pid}")


def reset_peak(*pids: int) -> list[float]:
    """Set each process's peak RSS to its RSS now (clear_refs 5); those RSS figures, MiB."""
    for pid in pids:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    return [peak_mib(pid) for pid in pids]


async def measured(pids: list[int], run: Awaitable[T]) -> tuple[list[float], float, T]:
    """Run once (a coroutine not yet started): each process's peak RSS growth (MiB) over its
    RSS before, the seconds, and what it returned."""
    before = reset_peak(*pids)
    started = time.perf_counter()
    result = await run
    elapsed = time.perf_counter() - started
    growth = [peak_mib(pid) - base for pid, base in zip(pids, before, strict=True)]
    return growth, elapsed, result


async def direct_twice(gateway: GatewayProcess, input_name: str) -> float:
    """Seconds for the output straight from ComfyUI, the second of two runs: the first loads
    the input, which ComfyUI then caches for every later job on this size (the gateway's too)."""
    for _ in range(2):
        graph = latent_graph(input_name, prefix())
        seconds, _ = await direct(gateway.comfy_url, graph, gateway.output_dir)
    return seconds


def prefix() -> str:
    return f"bench_{uuid.uuid4().hex[:12]}"


@contextlib.asynccontextmanager
async def lone_gateway(
    workdir: Path, inputs: dict[int, Path]
) -> AsyncIterator[tuple[GatewayProcess, dict[int, str]]]:
    """A fresh gateway, its inputs linked; each path gets one, so that no path's figures rest
    on memory an earlier path left to the allocator. With it, the name LoadLatent reads for
    each output size."""
    gateway = GatewayProcess(workdir / f"lone-{uuid.uuid4().hex[:8]}", **SETTINGS)
    names = {mib: link_input(gateway.input_dir, path) for mib, path in inputs.items()}
    await asyncio.to_thread(gateway.start, timeout_s=300)
    try:
        yield gateway, names
    finally:
        await asyncio.to_thread(gateway.stop)


async def lone_paths(args: argparse.Namespace, workdir: Path, inputs: dict[int, Path]) -> list[Row]:
    """Every path but the fleet's, each on a fresh gateway; then the concurrent answers."""
    rows: list[Row] = []
    sink = await WebhookSink(base64.b64decode(SECRET)).start()
    http = httpx.AsyncClient(timeout=TIMEOUT)
    try:
        for name in [p for p in args.paths if p in PATHS]:
            async with lone_gateway(workdir, inputs) as (gateway, names):
                answer = PATHS[name]
                await answer(http, gateway.url, latent_graph(names[WARM_MIB], prefix()), sink)
                for mib in args.sizes:
                    direct_s = await direct_twice(gateway, names[mib])
                    progress(f"  {name}, {mib} MiB")
                    graph = latent_graph(names[mib], prefix())
                    try:
                        (growth,), wall, _ = await measured(
                            [gateway.pid], answer(http, gateway.url, graph, sink)
                        )
                    except PathFailed as e:
                        rows.append(Row(name, mib, math.nan, math.nan, direct_s, f"failed: {e}"))
                        continue
                    rows.append(Row(name, mib, growth, wall, direct_s))
        if args.concurrent:
            mib = args.concurrent_mib
            async with lone_gateway(workdir, inputs) as (gateway, names):
                await sync_prompt(http, gateway.url, latent_graph(names[WARM_MIB], prefix()), sink)
                direct_s = await direct_twice(gateway, names[mib])
                progress(f"  {args.concurrent} x {mib} MiB at once")
                graphs = [latent_graph(names[mib], prefix()) for _ in range(args.concurrent)]
                (growth,), wall, _ = await measured(
                    [gateway.pid], at_once(http, gateway.url, graphs)
                )
                one_by_one = args.concurrent * direct_s  # ComfyUI runs them one after another
                note = "direct: the same outputs one after another"
                rows.append(Row(f"sync x{args.concurrent}", mib, growth, wall, one_by_one, note))
    finally:
        await http.aclose()
        await sink.stop()
    return rows


async def at_once(http: httpx.AsyncClient, url: str, graphs: list[dict[str, Any]]) -> None:
    """POST /prompt for each graph; read no answer until every answer has begun, so that the
    gateway holds all of them open at once."""
    everyone = asyncio.Barrier(len(graphs))

    async def one(graph: dict[str, Any]) -> None:
        async with http.stream("POST", f"{url}/prompt", json={"prompt": graph}) as response:
            response.raise_for_status()
            await everyone.wait()
            await drain(response)

    await asyncio.gather(*(one(g) for g in graphs))


async def fleet_path(args: argparse.Namespace, workdir: Path, inputs: dict[int, Path]) -> list[Row]:
    """The fleet's sync answer, from the gateway that did not run the job."""
    rows: list[Row] = []
    async with fleet(workdir, **SETTINGS) as pair, httpx.AsyncClient(timeout=TIMEOUT) as http:
        names = link_everywhere(pair, inputs)
        await fleet_sync(http, pair, latent_graph(names[WARM_MIB], prefix()))
        for mib in args.sizes:
            direct_s = await direct_twice(pair.runner, names[mib])
            progress(f"  fleet, {mib} MiB")
            graph = latent_graph(names[mib], prefix())
            pids = [pair.answerer.pid, pair.runner.pid]
            (answerer, runner), wall, (_, ran) = await measured(pids, fleet_sync(http, pair, graph))
            note = f"ran on the {ran}; the runner's peak grew {runner:.1f} MiB"

            rows.append(Row("fleet", mib, answerer, wall, direct_s, note))
    return rows


def link_everywhere(pair: Fleet, inputs: dict[int, Path]) -> dict[int, str]:
    names: dict[int, str] = {}
    for gateway in (pair.runner, pair.answerer):
        names = {mib: link_input(gateway.input_dir, path) for mib, path in inputs.items()}
    return names


async def main(args: argparse.Namespace) -> int:
    wanted = {WARM_MIB, *args.sizes, *([args.concurrent_mib] if args.concurrent else [])}
    progress(f"noise latents in {args.cache}: {sorted(wanted)} MiB")
    inputs = {mib: noise_latent(args.cache, mib) for mib in sorted(wanted)}
    load = loadavg()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-large-output-") as folder:
        if any(p in PATHS for p in args.paths) or args.concurrent:
            progress("one gateway: " + ", ".join(p for p in args.paths if p in PATHS))
            rows += await lone_paths(args, Path(folder), inputs)
        if "fleet" in args.paths:
            progress("two fleet gateways on one redis-server")
            rows += await fleet_path(args, Path(folder), inputs)
    print_report(rows, load_before=load, load_after=loadavg())
    if args.json:
        args.json.write_text(json.dumps([row.__dict__ for row in rows], indent=1))
    return 0


def sizes(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=sizes, default=[16, 64, 256], help="MiB, 4**k each")
    parser.add_argument(
        "--paths",
        type=lambda text: text.split(","),
        default=[*PATHS, "fleet"],
        help=f"some of {','.join([*PATHS, 'fleet'])}",
    )
    parser.add_argument("--concurrent", type=int, default=4, help="outputs at once (0: skip)")
    parser.add_argument("--concurrent-mib", type=int, default=256)
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "bench")
    parser.add_argument("--json", type=Path)
    sys.exit(asyncio.run(main(parser.parse_args())))
