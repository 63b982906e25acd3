"""What the integration tests share: real gateways (tests.gateway_process), the test graphs,
and polling."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.gateway_process import (
    COMFY_HOME,
    MODELS,
    ROOT,
    alive,
    comfy_version,
    free_port,
)
from tests.gateway_process import GatewayProcess as Gateway

__all__ = [
    "COMFY_HOME",
    "GRAPHS",
    "MODELS",
    "ROOT",
    "Gateway",
    "alive",
    "assert_capacity_whole",
    "comfy_version",
    "eventually",
    "free_port",
    "graph",
    "running",
]

GRAPHS = ROOT / "tests" / "graphs"


def graph(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((GRAPHS / f"{name}.json").read_text())
    return loaded


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


@contextlib.contextmanager
def running(workdir: Path, **env: str) -> Iterator[Gateway]:
    gateway = Gateway(workdir, **env)
    try:
        yield gateway.start()
    finally:
        gateway.stop()


def assert_capacity_whole(gateway: Gateway, client: httpx.Client | None = None) -> None:
    """After a refused or failed request: the gateway holds no job (every instance idle, /ready's
    queue_depth back to 0) and a normal job runs at once. `client` carries the API key where
    the gateway has keys."""

    def idle() -> bool:
        health = httpx.get(f"{gateway.url}/health", timeout=5).json()
        ready = httpx.get(f"{gateway.url}/ready", timeout=5).json()
        return not any(i["jobs"] for i in health["instances"]) and ready["queue_depth"] == 0

    eventually(idle, timeout_s=30, what="the gateway to hold no job (/health, /ready)")
    with contextlib.ExitStack() as stack:
        c = client or stack.enter_context(gateway.client())
        answer = c.post("/prompt", json={"prompt": graph("g1_empty_save")}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["images"]) == 1
