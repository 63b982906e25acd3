"""comfy-api-proxy 0.1.6 and the gateway side by side, for the differential /api/v2 tests: the
proxy process on the same ComfyUI, one request sent to both, and JSON compared by shape.

Every deliberate difference a test allows is named in DIFFERENCES (docs/compatibility.md says
why); `seen` records the ones that occurred, and a test fails on any other difference.

The proxy's jobs run on the shared gateway's ComfyUI and leave their files in its output folder
(the gateway removes only its own jobs' files). The other tests sharing that gateway expect an
empty folder, so closing the pair removes what the proxy's jobs wrote, and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.gateway_process import LOOPBACK, GatewayProcess, free_port

DIFFERENCES = {
    "started_at": "the gateway knows when a job started (the proxy: always null)",
    "completed_at": "the gateway knows when a job ended (the proxy: always null)",
    "details.location": "the gateway names the bad part of a refused graph",
    "text/plain errors": "the gateway answers unknown paths, wrong methods and a JSON body that "
    "is not an object in the v2 envelope (the proxy: aiohttp's text/plain 404, 405, 500)",
    "416": "an unsatisfiable Range is a 416 (the proxy: 502 upstream_error)",
    "size_bytes": "outputs carry their real size (the proxy: 0)",
    "canceled at once": "a cancelled job is `canceled` when the cancel answers (the proxy: "
    "`canceling`, then `canceled`, `expired` for a pending job on ComfyUI 0.33, and no effect "
    "on 0.3.75)",
    "output as input": "an output id in a core/ASSET reference runs on that output's bytes "
    "(the proxy passes its file name, which ComfyUI refuses)",
    "status events": "the event stream sends `status` on every change and ends on the final "
    "one (the proxy: only at the end, and sometimes ends on `running`)",
}
TERMINAL = {"succeeded", "failed", "canceled"}


@contextlib.contextmanager
def running_proxy(comfy_url: str, workdir: Path) -> Iterator[str]:
    """`comfy-api-proxy run` against a ComfyUI, on a free loopback port; its base URL."""
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    log = (workdir / "comfy-api-proxy.log").open("ab")
    command = [sys.executable, "-m", "comfy_api_proxy.cli", "run", "--comfyui", comfy_url]
    proc = subprocess.Popen(
        [*command, "--host", LOOPBACK, "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, (workdir / "comfy-api-proxy.log").read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/api/v2/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.1)
        else:
            raise AssertionError("comfy-api-proxy did not answer /api/v2/health")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@contextlib.contextmanager
def paired(gateway: GatewayProcess, workdir: Path) -> Iterator[Pair]:
    """comfy-api-proxy on the gateway's ComfyUI, paired with the gateway. On leaving: what the
    proxy's jobs wrote is removed, and every difference seen must be one DIFFERENCES lists."""
    with running_proxy(gateway.comfy_url, workdir) as proxy_url:
        both = Pair(proxy_url, gateway)
        yield both
        both.close()
    unknown = both.seen - set(DIFFERENCES)
    assert not unknown, unknown


class Pair:
    """One client per server; `both` sends the same request to each."""

    def __init__(self, proxy_url: str, gateway: GatewayProcess) -> None:
        self.proxy = httpx.Client(
            base_url=proxy_url, timeout=60, event_hooks={"response": [self._note_job]}
        )
        self.gateway = httpx.Client(base_url=gateway.url, timeout=60)
        self.comfy_url = gateway.comfy_url
        self.output_dir = gateway.output_dir
        self.seen: set[str] = set()  # the deliberate differences that occurred
        self.proxy_jobs: set[str] = set()  # ids of the jobs the proxy accepted (= prompt ids)

    @property
    def clients(self) -> tuple[httpx.Client, httpx.Client]:
        return self.proxy, self.gateway

    def close(self) -> None:
        try:
            self.remove_proxy_outputs()
        finally:
            self.proxy.close()
            self.gateway.close()

    def _note_job(self, response: httpx.Response) -> None:
        request = response.request
        if request.method != "POST" or request.url.path.rstrip("/") != "/api/v2/jobs":
            return
        if response.status_code // 100 == 2:
            response.read()
            with contextlib.suppress(ValueError):
                job_id = response.json().get("id")
                if isinstance(job_id, str):
                    self.proxy_jobs.add(job_id)

    def remove_proxy_outputs(self) -> None:
        """Stop what the proxy's jobs still have queued or running in ComfyUI (a cancel through
        the proxy does not stop a job on 0.3.75), then delete the files they wrote."""
        deadline = time.monotonic() + 60
        while True:
            queue = httpx.get(f"{self.comfy_url}/queue", timeout=10).json()
            running = [e[1] for e in queue["queue_running"] if e[1] in self.proxy_jobs]
            pending = [e[1] for e in queue["queue_pending"] if e[1] in self.proxy_jobs]
            if not running and not pending:
                break
            assert time.monotonic() < deadline, f"the proxy's jobs did not stop: {queue}"
            if pending:
                httpx.post(f"{self.comfy_url}/queue", json={"delete": pending}, timeout=10)
            if running:  # ComfyUI runs one prompt at a time: the proxy's, here
                httpx.post(f"{self.comfy_url}/interrupt", timeout=10)
            time.sleep(0.1)
        for job_id in self.proxy_jobs:
            found = httpx.get(f"{self.comfy_url}/history/{job_id}", timeout=10).json()
            outputs = (found.get(job_id) or {}).get("outputs") or {}
            for node in outputs.values():
                for items in node.values():
                    for item in items if isinstance(items, list) else []:
                        if isinstance(item, dict) and item.get("type") == "output":
                            path = self.output_dir / item.get("subfolder", "") / item["filename"]
                            path.unlink(missing_ok=True)

    def both(self, method: str, path: str, **kwargs: Any) -> tuple[httpx.Response, httpx.Response]:
        return (
            self.proxy.request(method, path, **kwargs),
            self.gateway.request(method, path, **kwargs),
        )

    def same_shape(
        self, proxy: Any, gateway: Any, allowed: dict[str, str] | None = None
    ) -> set[str]:
        """Assert both bodies have one shape but where `allowed` (path: difference) says."""
        allowed = allowed or {}
        differ = shape_diff(proxy, gateway)
        assert differ <= set(allowed), f"undeclared: {differ - set(allowed)}\n{proxy}\n{gateway}"
        self.seen |= {allowed[path] for path in differ}
        return differ

    def same_error(
        self, proxy: httpx.Response, gateway: httpx.Response, status: int, code: str
    ) -> dict[str, Any]:
        """Both are this v2 error; the gateway's body (the proxy's shape, plus a location)."""
        assert (proxy.status_code, gateway.status_code) == (status, status), (
            proxy.text,
            gateway.text,
        )
        assert gateway.headers["content-type"].startswith("application/json")
        body: dict[str, Any] = gateway.json()
        if not proxy.headers["content-type"].startswith("application/json"):
            self.seen.add("text/plain errors")  # aiohttp's own 404/405/500
            assert body["error"]["code"] == code
            return body
        located = {path: "details.location" for path in ("error.details", "error.details.location")}
        self.same_shape(proxy.json(), body, located)
        assert proxy.json()["error"]["code"] == body["error"]["code"] == code
        return body


def shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else type(value).__name__


def shape_diff(a: Any, b: Any, path: str = "") -> set[str]:
    """The paths (`outputs[0].size_bytes`) where two JSON values differ in shape (not value)."""
    if isinstance(a, dict) and isinstance(b, dict):
        found: set[str] = set()
        for key in a.keys() | b.keys():
            at = f"{path}.{key}" if path else key
            found |= {at} if (key in a) != (key in b) else shape_diff(a[key], b[key], at)
        return found
    if isinstance(a, list) and isinstance(b, list):
        found = {f"{path}[len]"} if len(a) != len(b) else set()
        for index, (x, y) in enumerate(zip(a, b, strict=False)):
            found |= shape_diff(x, y, f"{path}[{index}]")
        return found
    return set() if shape(a) == shape(b) else {path}


def poll(
    client: httpx.Client, job_id: str, timeout_s: float = 90
) -> tuple[dict[str, Any], list[str]]:
    """Poll a job until it reaches a terminal status; the last body and every status seen.

    `expired` is not final here: the proxy reports it for a moment when a job ends between
    its two calls to ComfyUI (/history, then /queue).
    """
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while True:
        body: dict[str, Any] = client.get(f"/api/v2/jobs/{job_id}").json()
        if not seen or seen[-1] != body["status"]:
            seen.append(body["status"])
        if body["status"] in TERMINAL or time.monotonic() > deadline:
            return body, seen
        time.sleep(0.05)


def wait_status(client: httpx.Client, job_id: str, status: str, timeout_s: float = 60) -> None:
    body, seen = poll_until(client, job_id, {status}, timeout_s)
    assert body["status"] == status, f"{job_id} never {status}: {seen}"


def poll_until(
    client: httpx.Client, job_id: str, wanted: set[str], timeout_s: float
) -> tuple[dict[str, Any], list[str]]:
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while True:
        body: dict[str, Any] = client.get(f"/api/v2/jobs/{job_id}").json()
        seen.append(body["status"])
        if body["status"] in wanted or time.monotonic() > deadline:
            return body, seen
        time.sleep(0.05)


def sse(client: httpx.Client, job_id: str, timeout_s: float = 60) -> list[tuple[str, Any]]:
    """The (event, data) frames of a job's event stream until it ends (comments left out)."""
    frames: list[tuple[str, Any]] = []
    with client.stream("GET", f"/api/v2/jobs/{job_id}/events", timeout=timeout_s) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event is not None:
                frames.append((event, json.loads(line.removeprefix("data: "))))
                event = None
    return frames
