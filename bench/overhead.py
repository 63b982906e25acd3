"""Gateway overhead against direct ComfyUI: latency, throughput and idle memory.

Runs the same trivial graph (EmptyImage 64x64 -> SaveImage) two ways against one running
ComfyUI: directly, as a careful client of raw ComfyUI would (one websocket, one HTTP client,
POST /prompt, wait for the prompt's `executing` with `node: null`, GET /view, base64), and
through the gateway (POST /prompt, outputs base64 in the JSON). Prints the figures next to the
targets. A report, not a test: it exits 0 whatever the figures, 1 if anything errored.

    .venv/bin/python -m bench.overhead [-n 200] [--concurrency 16] [--concurrent-requests 320]
        [--gateway-url URL --comfy-url URL [--gateway-pid PID] [--output-dir DIR]] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import httpx

from bench.clients import BenchClient, BenchError, DirectClient, GatewayClient
from bench.measure import (
    Target,
    concurrent,
    idle_rss,
    median_difference_ci,
    progress,
    sequential,
)
from bench.procfs import cpu_ticks, loadavg, steal_percent
from bench.report import Results, mean_cpu, table, verdicts
from tests.gateway_process import GatewayProcess, descendants

HEALTH_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 60.0


# -- the gateway process --------------------------------------------------------------------


# -- measuring ------------------------------------------------------------------------------


# -- reporting ------------------------------------------------------------------------------


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Gateway overhead against direct ComfyUI.")
    p.add_argument("--gateway-url", help="use this running gateway instead of starting one")
    p.add_argument("--comfy-url", help="the ComfyUI that gateway runs (with --gateway-url)")
    p.add_argument("--gateway-pid", type=int, help="its PID, for RSS and CPU (--gateway-url)")
    p.add_argument("--output-dir", type=Path, help="its OUTPUT_DIR, to clean direct outputs")
    p.add_argument("-n", type=int, default=200, help="sequential requests each way")
    p.add_argument("--concurrency", type=int, default=16, help="concurrent clients")
    p.add_argument("--concurrent-requests", type=int, default=320, help="requests per path")
    p.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = p.parse_args(argv)
    if bool(args.gateway_url) != bool(args.comfy_url):
        p.error("--gateway-url and --comfy-url go together")
    if args.n < 2 or args.concurrency < 1 or args.concurrent_requests < 1:
        p.error("-n must be at least 2, the concurrent figures at least 1")
    return args


async def measure(args: argparse.Namespace, target: Target) -> Results:
    rss_start = await idle_rss(target.gateway_pid)
    async with httpx.AsyncClient(base_url=target.gateway_url, timeout=10) as http:
        comfyui_version = str((await http.get("/health")).json().get("comfyui_version"))
    load_before, ticks_before = loadavg(), cpu_ticks()
    direct = DirectClient(target.comfy_url, target.output_dir)
    gateway = GatewayClient(target.gateway_url)
    clients: dict[str, BenchClient] = {"direct": direct, "gateway": gateway}
    errors: dict[str, list[str]] = {path: [] for path in clients}
    await direct.open()
    try:
        seq, seq_rounds = await sequential(clients, errors, args.n)
        rounds = await concurrent(
            target, clients, errors, args.concurrent_requests, args.concurrency
        )
    finally:
        await direct.close()
        await gateway.close()
    load_after, ticks_after = loadavg(), cpu_ticks()
    rss_runs = await idle_rss(target.gateway_pid)
    rates = {path: statistics.fmean(x.req_per_s for x in rs) for path, rs in rounds.items()}
    d, g = seq["direct"].median_ms, seq["gateway"].median_ms
    results = Results(
        n=args.n,
        concurrency=args.concurrency,
        concurrent_requests=args.concurrent_requests,
        gateway_url=target.gateway_url,
        comfy_url=target.comfy_url,
        comfyui_version=comfyui_version,
        sequential=seq,
        median_overhead_ms=g - d,
        median_ratio=g / d,
        median_overhead_ci95_ms=median_difference_ci(seq_rounds),
        throughput_rounds=rounds,
        throughput_req_per_s=rates,
        throughput_ratio=rates["gateway"] / rates["direct"],
        cpu_ms_per_request={path: mean_cpu(rs) for path, rs in rounds.items()},
        rss_after_start_mib=rss_start,
        rss_after_runs_mib=rss_runs,
        loadavg_before=load_before,
        loadavg_after=load_after,
        steal_percent=steal_percent(ticks_before, ticks_after),
        errors=errors,
    )
    results.verdicts = verdicts(results)
    return results


def external_target(args: argparse.Namespace) -> Target:
    pid: int | None = args.gateway_pid
    children = sorted(descendants(pid)) if pid else []
    return Target(
        args.gateway_url,
        args.comfy_url,
        gateway_pid=pid,
        comfy_pid=children[0] if children else None,
        output_dir=args.output_dir,
    )


async def run_own_gateway(args: argparse.Namespace) -> Results:
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as workdir:
        gateway = GatewayProcess(Path(workdir), LOG_LEVEL="warning")
        progress(f"starting the gateway on :{gateway.port} (ComfyUI on :{gateway.comfy_port})")
        results: Results | None = None
        try:
            try:
                await asyncio.to_thread(gateway.start, timeout_s=HEALTH_TIMEOUT_S)
            except RuntimeError as e:
                raise BenchError(str(e)) from None
            progress(f"gateway healthy (pid {gateway.pid}, ComfyUI pid {gateway.comfy_pid()})")
            target = Target(
                gateway.url,
                gateway.comfy_url,
                gateway_pid=gateway.pid,
                comfy_pid=gateway.comfy_pid(),
                output_dir=gateway.output_dir,
            )
            results = await measure(args, target)
        finally:
            code, left = await asyncio.to_thread(gateway.stop, STOP_TIMEOUT_S)
            progress(f"gateway stopped with code {code}; children left: {left or 'none'}")
            if results is not None:
                results.stop = {"exit_code": code, "children_left": left}
            if left or code not in (0, -signal.SIGTERM):  # uvicorn may re-raise SIGTERM
                progress(f"gateway log tail:\n{gateway.log_tail()}")
    return results


async def run(args: argparse.Namespace) -> int:
    if args.gateway_url:
        results = await measure(args, external_target(args))
    else:
        results = await run_own_gateway(args)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(asdict(results), indent=2) + "\n")
    errored = any(results.errors.values()) or results.stop.get("children_left")
    return 1 if errored else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(run(args))
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
