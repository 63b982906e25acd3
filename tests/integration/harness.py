"""What the integration tests share: real gateways (tests.gateway_process), the test graphs,
and polling."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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
