"""The results of one overhead run, the targets, and the table printed at the end."""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from typing import Any

from bench.measure import WARMUP, Latency, Round

# Targets from the issue.
TARGET_MEDIAN_OVERHEAD_MS = 0.5  # issue 24 (was 1 ms)

TARGET_THROUGHPUT_RATIO = 0.90

TARGET_IDLE_RSS_MIB = 100e6 / 2**20  # 100 MB, read strictly: 95.4 MiB


@dataclass
class Results:
    n: int
    concurrency: int
    concurrent_requests: int
    gateway_url: str
    comfy_url: str
    comfyui_version: str  # as the gateway's /health reports it
    sequential: dict[str, Latency]
    median_overhead_ms: float
    median_ratio: float
    median_overhead_ci95_ms: tuple[float, float] | None  # paired bootstrap over rounds
    throughput_rounds: dict[str, list[Round]]
    throughput_req_per_s: dict[str, float]  # mean of the rounds
    throughput_ratio: float
    cpu_ms_per_request: dict[str, dict[str, float | None]]  # mean of the rounds
    rss_after_start_mib: float | None
    rss_after_runs_mib: float | None
    loadavg_before: str
    loadavg_after: str
    steal_percent: float
    errors: dict[str, list[str]]
    verdicts: dict[str, str] = field(default_factory=dict)
    stop: dict[str, Any] = field(default_factory=dict)


def mean_cpu(rounds: list[Round]) -> dict[str, float | None]:
    roles = rounds[0].cpu_ms_per_request
    means: dict[str, float | None] = {}
    for role in roles:
        values = [v for r in rounds if (v := r.cpu_ms_per_request[role]) is not None]
        means[role] = statistics.fmean(values) if values else None
    return means


def verdicts(r: Results) -> dict[str, str]:
    rss = max_or_none(r.rss_after_start_mib, r.rss_after_runs_mib)
    return {
        "median_overhead": mark(r.median_overhead_ms <= TARGET_MEDIAN_OVERHEAD_MS),
        "throughput_ratio": mark(r.throughput_ratio >= TARGET_THROUGHPUT_RATIO),
        "idle_rss": "n/a" if rss is None else mark(rss < TARGET_IDLE_RSS_MIB),
    }


def mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def max_or_none(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def cell(value: float | None, width: int = 8) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:{width}.2f}"


def sequential_lines(r: Results) -> list[str]:
    lines = [
        f"Sequential, alternating direct/gateway, n={r.n} each after {WARMUP} warm-up each (ms)",
        f"  {'path':<8} {'median':>8} {'p90':>8} {'mean':>8}",
    ]
    for path, lat in r.sequential.items():
        lines.append(f"  {path:<8} {lat.median_ms:8.2f} {lat.p90_ms:8.2f} {lat.mean_ms:8.2f}")
    ci = r.median_overhead_ci95_ms
    shown_ci = "n/a" if ci is None else f"{ci[0]:+.2f} .. {ci[1]:+.2f} ms"
    lines += [
        f"  gateway - direct (medians): {r.median_overhead_ms:+.2f} ms, ratio {r.median_ratio:.3f}",
        f"  95 % interval of that difference (bootstrap over the pairs): {shown_ci}",
    ]
    return lines


def concurrent_lines(r: Results) -> list[str]:
    lines = [
        f"Concurrent, {r.concurrency} clients, {r.concurrent_requests} requests per path per "
        "round; rounds run direct, gateway, direct, gateway; figures are the MEAN of the 2",
        f"  {'path':<8} {'req/s':>7}  {'(rounds)':<15} CPU ms per request: "
        f"{'client':>8} {'gateway':>8} {'ComfyUI':>8}",
    ]
    for path, rounds in r.throughput_rounds.items():
        each = ", ".join(f"{x.req_per_s:.1f}" for x in rounds)
        cpu = r.cpu_ms_per_request[path]
        lines.append(
            f"  {path:<8} {r.throughput_req_per_s[path]:7.1f}  {'(' + each + ')':<15} "
            f"{'':<19} {cell(cpu['client'])} {cell(cpu['gateway'])} {cell(cpu['comfyui'])}"
        )
    lines.append(f"  gateway / direct: {r.throughput_ratio:.3f}")
    return lines


def target_lines(r: Results) -> list[str]:
    v = r.verdicts
    rss = max_or_none(r.rss_after_start_mib, r.rss_after_runs_mib)
    shown_rss = "n/a" if rss is None else f"{rss:.1f}"
    return [
        "Targets (from the issue)",
        f"  {'gateway median - direct median <= 0.5 ms':<46} "
        f"{r.median_overhead_ms:+8.2f} ms    {v['median_overhead']}",
        f"  {'concurrent throughput >= 90 % of direct':<46} "
        f"{r.throughput_ratio * 100:8.1f} %     {v['throughput_ratio']}",
        f"  {'gateway idle RSS < 100 MB = 95.4 MiB (larger)':<46} "
        f"{shown_rss:>8} MiB   {v['idle_rss']}",
    ]


def table(r: Results) -> str:
    def mib(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f} MiB"

    lines = ["", f"ComfyUI {r.comfyui_version}", "", *sequential_lines(r), "", *concurrent_lines(r)]
    lines.append("")
    lines += [
        f"Gateway idle RSS (VmRSS of the gateway PID, not ComfyUI): after start-up "
        f"{mib(r.rss_after_start_mib)}, after the runs {mib(r.rss_after_runs_mib)}",
        f"Machine: {os.cpu_count()} CPUs, load average before {r.loadavg_before}, after "
        f"{r.loadavg_after}; CPU steal during the runs {r.steal_percent:.1f} %",
        "",
        *target_lines(r),
        "",
        "Errors: " + ", ".join(f"{path} {len(errs)}" for path, errs in r.errors.items()),
    ]
    for path, errs in r.errors.items():
        lines += [f"  {path}: {e}" for e in errs[:5]]
    return "\n".join(lines)
