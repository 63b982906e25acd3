"""GatewayProcess: a real `python -m app` (and so its own ComfyUI child) on free loopback ports.

One helper for the integration tests and the benchmarks: each gateway gets its own folders and
log file, its ports are free ones, and stopping it reports which of its processes outlived it.
`TEST_COMFY_HOME` picks the ComfyUI (`make integration` and `make bench` set it from
COMFYUI_SOURCE); the default is the bundled 0.3.75.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / ".cache" / "models"
COMFY_HOME = Path(os.environ.get("TEST_COMFY_HOME") or ROOT / ".comfyui" / "0.3.75" / "ComfyUI")
LOOPBACK = "127.0.0.1"


def comfy_version(home: Path = COMFY_HOME) -> str:
    """The version in a ComfyUI folder's comfyui_version.py."""
    text = (home / "comfyui_version.py").read_text()
    match = re.search(r'__version__ = "([^"]+)"', text)
    assert match, f"no __version__ in {home}/comfyui_version.py"
    return match.group(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def free_port_range(count: int, avoid: int = 0) -> int:
    """The first of `count` consecutive free ports (a pool's ComfyUI instances take one each),
    none of them `avoid` (a port just picked for another use is free again until it is bound)."""
    for _ in range(100):
        first = free_port()
        if not first <= avoid < first + count and all(_free(first + n) for n in range(1, count)):
            return first
    raise RuntimeError(f"found no {count} consecutive free ports")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, starttime) from /proc/<pid>/stat, or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def alive(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z"


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
    """Those of pids (with their start times) that still run, not a later process reusing one."""
    return [
        pid
        for pid, start in pids.items()
        if (stat := proc_stat(pid)) is not None and stat[0] != "Z" and stat[2] == start
    ]


class GatewayProcess:
    """One gateway process with its ComfyUI child, on free ports, with its own folders."""

    def __init__(self, workdir: Path, **env: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.instances = int(env.get("COMFYUI_INSTANCES", "1"))
        self.comfy_port = free_port_range(self.instances, avoid=self.port)
        self.input_dir = workdir / "input"
        self.output_dir = workdir / "output"
        self.input_dir.mkdir(parents=True, exist_ok=True)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "gateway.log"
        # HOST is left unset: every gateway listens as a default one does, on IPv4 and IPv6.
        inherited = {k: v for k, v in os.environ.items() if k not in ("HOST", "CONFIG_FILE")}
        self.env = {
            **inherited,
            "COMFY_HOME": str(COMFY_HOME),
            "PORT": str(self.port),
            "COMFYUI_PORT_HOST": str(self.comfy_port),
            "INPUT_DIR": str(self.input_dir),
            "OUTPUT_DIR": str(self.output_dir),
            "MODEL_DIR": str(MODELS),
            "STARTUP_CHECK_MAX_TRIES": "240",
            "STARTUP_CHECK_INTERVAL_S": "0.5",
            "LOG_LEVEL": "info",
            **env,
        }
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.comfy_url = f"http://{LOOPBACK}:{self.comfy_port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.children: dict[int, int] = {}  # every process it started, seen while it ran

    def start(self, *, wait: bool = True, timeout_s: float = 180) -> GatewayProcess:
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            self.wait_healthy(timeout_s)
        return self

    def wait_healthy(self, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"gateway exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    self.children |= descendants(self.proc.pid)
                    return
            time.sleep(0.2)
        raise RuntimeError(f"gateway not healthy after {timeout_s}s:\n{self.log_tail()}")

    def wait_exit(self, timeout_s: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout_s)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:]) or "(empty log)"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def comfy_pid(self, index: int = 0) -> int:
        """The pid of ComfyUI instance `index` (a direct child listening on its port)."""
        port = str(self.comfy_port + index)
        children = [
            pid
            for pid in descendants(self.pid)
            if (stat := proc_stat(pid)) is not None and stat[1] == self.pid
        ]
        if self.instances == 1:
            assert len(children) == 1, f"expected one ComfyUI child, found {children}"
            return children[0]
        for pid in children:
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if port.encode() in argv:
                    return pid
        raise AssertionError(f"no ComfyUI child listens on port {port} (children {children})")

    def client(self, timeout_s: float = 120) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout_s)

    def stop(self, timeout_s: float = 60) -> tuple[int | None, list[int]]:
        """SIGTERM and wait (SIGKILL past timeout_s); the exit code, and the pids of the processes
        it started that outlived it (killed now)."""
        if self.proc is None:
            return None, []
        if self.proc.poll() is None:
            self.children |= descendants(self.proc.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        time.sleep(0.2)  # let the kernel reap what was re-parented to init
        left = still_alive(self.children)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return self.proc.returncode, left
