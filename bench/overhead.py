"""Gateway overhead against direct ComfyUI: latency, throughput and idle memory.

Runs the same trivial graph (EmptyImage 64x64 -> SaveImage) two ways against one running
ComfyUI: directly, as a careful client of raw ComfyUI would (one websocket, one HTTP client,
POST /prompt, wait for the prompt's `executing` with `node: null`, GET /view, base64), and
through the gateway (POST /prompt, outputs base64 in the JSON). Prints the figures next to the
targets. A report, not a test: it exits 0 whatever the figures, 1 if anything errored.

    .venv/bin/python bench/overhead.py [-n 200] [--concurrency 16] [--concurrent-requests 320]
        [--gateway-url URL --comfy-url URL [--gateway-pid PID] [--output-dir DIR]] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
WARMUP = 10
REQUEST_TIMEOUT_S = 60.0
HEALTH_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 60.0
SETTLE_S = 2.0  # quiet time before an idle RSS reading

# Targets from the issue.
TARGET_MEDIAN_OVERHEAD_MS = 1.0
TARGET_THROUGHPUT_RATIO = 0.90
TARGET_IDLE_RSS_MIB = 100e6 / 2**20  # 100 MB, read strictly: 95.4 MiB

Graph = dict[str, dict[str, Any]]
Call = Callable[[], Awaitable[None]]


class BenchClient(Protocol):
    """One way of running the graph: `request()` raises on any failure; `last_s` is its time."""

    last_s: float

    async def request(self) -> None: ...


class BenchError(Exception):
    """A request or the set-up went wrong; the message says how."""


# -- the graph ------------------------------------------------------------------------------


_colors: Iterator[int] = itertools.count(1)


def trivial_graph(prefix: str) -> Graph:
    """EmptyImage 64x64 -> SaveImage, with a colour no earlier request used (defeats the cache)."""
    color = next(_colors) % 0x1000000
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": color},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


# -- the direct path ------------------------------------------------------------------------


@dataclass
class Pending:
    done: asyncio.Future[None]
    files: list[dict[str, str]] = field(default_factory=list)


class DirectClient:
    """A careful client of raw ComfyUI: one websocket, one HTTP client, events by prompt id."""

    def __init__(self, comfy_url: str, output_dir: Path | None) -> None:
        self.comfy_url = comfy_url.rstrip("/")
        self.output_dir = output_dir
        self.client_id = uuid.uuid4().hex
        self.http = httpx.AsyncClient(base_url=self.comfy_url, timeout=REQUEST_TIMEOUT_S)
        self.pending: dict[str, Pending] = {}
        self.last_s = 0.0  # the latest request's duration
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        ws_url = self.comfy_url.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}"
        try:
            self._ws = await connect(ws_url, max_size=2**26, open_timeout=10)
        except (OSError, TimeoutError, WebSocketException) as e:
            raise BenchError(f"cannot open ComfyUI's websocket {ws_url}: {e!r}") from e
        self._reader = asyncio.create_task(self._read(self._ws))

    async def close(self) -> None:
        if self._reader:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._ws:
            await self._ws.close()
        await self.http.aclose()

    async def _read(self, ws: ClientConnection) -> None:
        error: BaseException = BenchError("ComfyUI's websocket closed")
        try:
            async for message in ws:
                if isinstance(message, str):
                    event = json.loads(message)
                    self._handle(event.get("type"), event.get("data") or {})
        except Exception as e:
            error = BenchError(f"ComfyUI's websocket failed: {e!r}")
        for waiting in self.pending.values():
            if not waiting.done.done():
                waiting.done.set_exception(error)

    def _handle(self, kind: str | None, data: dict[str, Any]) -> None:
        waiting = self.pending.get(str(data.get("prompt_id")))
        if waiting is None or waiting.done.done():
            return
        if kind == "executed":
            images = (data.get("output") or {}).get("images") or []
            waiting.files += [i for i in images if i.get("type", "output") == "output"]
        elif kind == "executing" and data.get("node") is None:
            waiting.done.set_result(None)
        elif kind in ("execution_error", "execution_interrupted"):
            waiting.done.set_exception(BenchError(f"{kind}: {str(data)[:300]}"))

    async def run(self) -> tuple[list[dict[str, str]], list[str]]:
        """Submit a fresh graph, wait for it, fetch its files: the files and their base64."""
        if self._reader is None or self._reader.done():
            raise BenchError("ComfyUI's websocket is not connected")
        prompt_id = str(uuid.uuid4())  # ComfyUI 0.33 takes only the canonical form
        waiting = Pending(asyncio.get_running_loop().create_future())
        self.pending[prompt_id] = waiting  # before submitting: no event can be missed
        try:
            body = {
                "prompt": trivial_graph(f"direct_{prompt_id}"),
                "client_id": self.client_id,
                "prompt_id": prompt_id,
            }
            response = await self.http.post("/prompt", json=body)
            if response.status_code != 200:
                raise BenchError(f"POST /prompt: {response.status_code} {response.text[:300]}")
            await asyncio.wait_for(waiting.done, REQUEST_TIMEOUT_S)
            return waiting.files, [await self._fetch(f) for f in waiting.files]
        finally:
            del self.pending[prompt_id]

    async def _fetch(self, file: dict[str, str]) -> str:
        params = {"filename": file["filename"], "subfolder": file.get("subfolder", "")}
        response = await self.http.get("/view", params={**params, "type": "output"})
        if response.status_code != 200:
            raise BenchError(f"GET /view {params}: {response.status_code}")
        return base64.b64encode(response.content).decode()

    async def request(self) -> None:
        """One timed request; its files are removed afterwards (untimed) when the folder is known.

        Removing keeps ComfyUI's output folder small for both paths: SaveImage lists the folder
        on every save, and the gateway removes its own files.
        """
        start = time.perf_counter()
        files, images = await self.run()
        elapsed = time.perf_counter() - start
        self._remove(files)
        if len(images) != 1 or not images[0]:
            raise BenchError(f"direct: expected one image, got {len(images)}")
        self.last_s = elapsed

    def _remove(self, files: list[dict[str, str]]) -> None:
        if self.output_dir is None:
            return
        for file in files:
            with contextlib.suppress(FileNotFoundError):
                (self.output_dir / file.get("subfolder", "") / file["filename"]).unlink()


# -- the gateway path -----------------------------------------------------------------------


class GatewayClient:
    """POST /prompt on the gateway; one image must come back, base64, with status 200."""

    def __init__(self, gateway_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=gateway_url.rstrip("/"), timeout=REQUEST_TIMEOUT_S)
        self.last_s = 0.0

    async def close(self) -> None:
        await self.http.aclose()

    async def request(self) -> None:
        start = time.perf_counter()
        response = await self.http.post("/prompt", json={"prompt": trivial_graph("gateway")})
        if response.status_code != 200:
            raise BenchError(f"gateway: {response.status_code} {response.text[:300]}")
        images = response.json().get("images")
        self.last_s = time.perf_counter() - start
        if not isinstance(images, list) or len(images) != 1 or not images[0]:
            raise BenchError(f"gateway: expected one image, got {str(images)[:100]}")


# -- the gateway process --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, starttime) from /proc/<pid>/stat, or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Every live descendant of root: pid -> starttime (to tell a reused pid apart)."""
    parents: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := proc_stat(int(entry.name))) and stat[0] != "Z":
            parents[int(entry.name)] = (stat[1], stat[2])
    found: dict[int, int] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, start) in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = start
                frontier.append(pid)
    return found


def still_alive(pids: dict[int, int]) -> list[int]:
    alive = []
    for pid, start in pids.items():
        stat = proc_stat(pid)
        if stat is not None and stat[0] != "Z" and stat[2] == start:
            alive.append(pid)
    return alive


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of one process so far (clock-tick resolution), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_ticks() -> list[int]:
    """The machine's CPU time counters from /proc/stat (user, nice, system, idle, ..., steal)."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def steal_percent(before: list[int], after: list[int]) -> float:
    """Share of CPU time the hypervisor gave to other guests between two cpu_ticks()."""
    spent = [b - a for a, b in zip(before, after, strict=True)]
    return 100 * spent[7] / max(sum(spent), 1)


def loadavg() -> str:
    """The 1, 5 and 15-minute load averages: other work on the machine skews every figure."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024  # the kernel's kB are KiB
    except (FileNotFoundError, ProcessLookupError):
        pass
    return None


class GatewayProcess:
    """`python -m app` on free loopback ports, its output in a log file."""

    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="bench-overhead-")
        self.output_dir = Path(self.tmp.name) / "output"
        self.output_dir.mkdir()
        self.log_path = Path(self.tmp.name) / "gateway.log"
        self.port = free_port()
        self.comfy_port = free_port()
        while self.comfy_port == self.port:
            self.comfy_port = free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self.children: dict[int, int] = {}

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def comfy_url(self) -> str:
        return f"http://{LOOPBACK}:{self.comfy_port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "CONFIG_FILE"}
        env.update(
            PORT=str(self.port),
            HOST=LOOPBACK,
            COMFYUI_PORT_HOST=str(self.comfy_port),
            DIRECT_ADDRESS=LOOPBACK,
            OUTPUT_DIR=str(self.output_dir),
            LOG_LEVEL="warning",
            STARTUP_CHECK_MAX_TRIES="120",
        )
        return env

    async def start(self) -> None:
        python = ROOT / ".venv" / "bin" / "python"
        argv = [str(python if python.exists() else Path(sys.executable)), "-m", "app"]
        with self.log_path.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *argv, cwd=ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT
            )
        await self._wait_healthy()
        self.children = descendants(self.proc.pid)

    async def _wait_healthy(self) -> None:
        assert self.proc is not None
        exited = asyncio.create_task(self.proc.wait())
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        try:
            async with httpx.AsyncClient(base_url=self.url, timeout=2.0) as http:
                while time.monotonic() < deadline:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get("/health")).status_code == 200:
                            return
                    await asyncio.wait([exited], timeout=0.5)
                    if exited.done():
                        raise BenchError(
                            f"the gateway exited with code {exited.result()} while starting; "
                            f"its log ends:\n{self.log_tail()}"
                        )
        finally:
            exited.cancel()
        raise BenchError(f"/health not 200 after {HEALTH_TIMEOUT_S:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    async def stop(self) -> tuple[int | None, list[int]]:
        """SIGTERM and wait; the exit code and the children still alive afterwards."""
        if self.proc is None:
            return None, []
        if self.proc.returncode is None:
            self.children |= descendants(self.proc.pid)
            self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise BenchError(
                f"the gateway ignored SIGTERM for {STOP_TIMEOUT_S:.0f}s; killed"
            ) from None
        await asyncio.sleep(0.5)  # let the kernel reap orphans re-parented to init
        left = still_alive(self.children)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return self.proc.returncode, left

    def cleanup(self) -> None:
        self.tmp.cleanup()


# -- measuring ------------------------------------------------------------------------------


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


# -- reporting ------------------------------------------------------------------------------


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
        f"  {'gateway median - direct median <= 1 ms':<46} "
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


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


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
    gateway = GatewayProcess()
    progress(f"starting the gateway on :{gateway.port} (ComfyUI on :{gateway.comfy_port})")
    results: Results | None = None
    try:
        await gateway.start()
        assert gateway.proc is not None
        children = sorted(gateway.children)
        progress(f"gateway healthy (pid {gateway.proc.pid}, children {children})")
        target = Target(
            gateway.url,
            gateway.comfy_url,
            gateway_pid=gateway.proc.pid,
            comfy_pid=children[0] if children else None,
            output_dir=gateway.output_dir,
        )
        results = await measure(args, target)
    finally:
        code, left = await gateway.stop()
        progress(f"gateway stopped with code {code}; children left: {left or 'none'}")
        if results is not None:
            results.stop = {"exit_code": code, "children_left": left}
        if left or code not in (0, -signal.SIGTERM):  # uvicorn may re-raise SIGTERM
            progress(f"gateway log tail:\n{gateway.log_tail()}")
        gateway.cleanup()
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
