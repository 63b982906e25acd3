"""Start a real gateway (`python -m app`, which starts its own ComfyUI) for integration tests."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
GRAPHS = ROOT / "tests" / "graphs"
MODELS = ROOT / ".cache" / "models"
# The ComfyUI this session tests against (`make integration COMFYUI_SOURCE=…` sets it).
COMFY_HOME = Path(os.environ.get("TEST_COMFY_HOME") or ROOT / ".comfyui" / "0.3.75" / "ComfyUI")


def comfy_version(home: Path = COMFY_HOME) -> str:
    """The version in a ComfyUI folder's comfyui_version.py."""
    text = (home / "comfyui_version.py").read_text()
    match = re.search(r'__version__ = "([^"]+)"', text)
    assert match, f"no __version__ in {home}/comfyui_version.py"
    return match.group(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def graph(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((GRAPHS / f"{name}.json").read_text())
    return loaded


def child_pids(pid: int) -> list[int]:
    """Direct children of pid, read from /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                children.append(int(entry.name))
    return children


def eventually(
    check: Callable[[], object], timeout_s: float = 60, what: str = "the condition"
) -> None:
    """Poll check() until it is truthy; fail naming what never happened."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Gateway:
    """One gateway process with its ComfyUI child, on free ports, with its own folders."""

    def __init__(self, workdir: Path, **env: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.comfy_port = free_port()
        self.input_dir = workdir / "input"
        self.output_dir = workdir / "output"
        self.input_dir.mkdir(parents=True, exist_ok=True)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "gateway.log"
        # HOST is left unset: every test gateway listens as a default one does, on IPv4 and IPv6.
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "HOST"},
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
        self.url = f"http://127.0.0.1:{self.port}"
        self.comfy_url = f"http://127.0.0.1:{self.comfy_port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True, timeout_s: float = 180) -> Gateway:
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
                    return
            time.sleep(0.2)
        raise RuntimeError(f"gateway not healthy after {timeout_s}s:\n{self.log_tail()}")

    def wait_exit(self, timeout_s: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout_s)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def comfy_pid(self) -> int:
        children = child_pids(self.pid)
        assert len(children) == 1, f"expected one ComfyUI child, found {children}"
        return children[0]

    def client(self, timeout_s: float = 120) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout_s)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@contextlib.contextmanager
def running(workdir: Path, **env: str) -> Iterator[Gateway]:
    gateway = Gateway(workdir, **env)
    try:
        yield gateway.start()
    finally:
        gateway.stop()
