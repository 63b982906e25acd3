"""Knowing where prompts are when ComfyUI's events do not say: lookups over HTTP, a stream that
goes silent without closing, and a queue changed in ComfyUI behind the gateway's back."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from app.comfy.client import ComfyClient
from app.comfy.tracker import PromptTracker
from tests.integration.harness import Gateway, comfy_version
from tests.integration.test_prompt import (
    empty_image,
    post,
    slow_graph,
    wait_for_comfy_queue,
    wait_for_status,
)


@pytest.fixture
async def comfy(gateway: Gateway) -> AsyncIterator[ComfyClient]:
    """The gateway's own HTTP client, aimed at the shared gateway's ComfyUI."""
    client = ComfyClient(gateway.comfy_url)
    await client.probe()
    yield client
    await client.aclose()


async def until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"still false after {timeout_s:g}s")


def remove_outputs(gateway: Gateway, outputs: dict[str, Any]) -> None:
    for output in outputs.values():
        for item in output.get("images", []):
            (gateway.output_dir / item["subfolder"] / item["filename"]).unlink(missing_ok=True)


async def test_probe_reads_the_version_and_the_jobs_api(comfy: ComfyClient) -> None:
    assert comfy.version == comfy_version()
    # The jobs API is a capability of the running ComfyUI, found by asking for it.
    listing = await comfy.http.get("/api/jobs", params={"limit": "1"})
    assert comfy.jobs_api == (listing.status_code == 200)


async def test_lookup_and_cancel_follow_a_prompt_through_comfyui(
    gateway: Gateway, comfy: ComfyClient
) -> None:
    """pending, running, finished (with outputs or with its interruption), unknown."""
    slow, quick = str(uuid.uuid4()), str(uuid.uuid4())
    await comfy.submit(slow_graph(seed=31), prompt_id=slow, client_id="lookup-test")
    await comfy.submit(empty_image(0x123456, prefix="lookup"), prompt_id=quick, client_id="x")
    assert (await comfy.lookup([slow]))[slow].state in ("pending", "running")
    await asyncio.to_thread(wait_for_comfy_queue, gateway, running=1, pending=1)
    found = await comfy.lookup([slow, quick, str(uuid.uuid4())])
    assert [where.state for where in found.values()] == ["running", "pending", "unknown"]

    await comfy.cancel(slow)  # interrupts the running one; the quick one then runs
    await asyncio.to_thread(wait_for_comfy_queue, gateway, running=0, pending=0)
    found = await comfy.lookup([slow, quick])
    assert found[slow].state == found[quick].state == "finished"
    messages = [kind for kind, _ in found[slow].entry["status"]["messages"]]
    assert "execution_interrupted" in messages
    [image] = found[quick].entry["outputs"]["2"]["images"]
    assert image["filename"].startswith("lookup")
    remove_outputs(gateway, found[quick].entry["outputs"])


class FreezingRelay:
    """A loopback relay for ComfyUI's websocket that can stop forwarding frames without
    closing: the socket stays open and answers pings, as in comfyui-api issue #186."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.replace("http", "ws", 1)
        self.frozen = False
        self.url = ""

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FreezingRelay]:
        async with serve(self._relay, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            self.url = f"ws://127.0.0.1:{port}"
            yield self

    async def _relay(self, client: ServerConnection) -> None:
        assert client.request is not None
        async with connect(self.upstream + client.request.path, max_size=2**26) as comfyui:

            async def down() -> None:
                async for message in comfyui:
                    if not self.frozen:
                        await client.send(message)

            # Ends when either side closes (the tracker drops a silent stream by closing it).
            tasks = [asyncio.create_task(down()), asyncio.create_task(client.wait_closed())]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_stream_that_goes_silent_does_not_hang_a_prompt(
    gateway: Gateway, comfy: ComfyClient
) -> None:
    relay = FreezingRelay(gateway.comfy_url)
    async with relay.running():
        tracker = PromptTracker(comfy, uuid.uuid4().hex, silence_s=1.0)
        tracker.ws_url = f"{relay.url}/ws?clientId={tracker.client_id}"
        tracker.start()
        try:
            await tracker.wait_connected(timeout_s=10)
            relay.frozen = True  # from here on ComfyUI's events never arrive
            prompt_id = str(uuid.uuid4())
            waiter = tracker.watch(prompt_id)
            graph = empty_image(0x00AA00, prefix="silent")
            await comfy.submit(graph, prompt_id=prompt_id, client_id=tracker.client_id)
            tracker.submitted(waiter)
            outputs = await asyncio.wait_for(asyncio.shield(waiter.done), 30)
            assert outputs["2"]["images"][0]["filename"].startswith("silent")
            remove_outputs(gateway, outputs)
            # ComfyUI finished a prompt the stream never reported: the stream was replaced.
            assert tracker.reconnects_forced == 1

            relay.frozen = False
            await until(lambda: tracker.generation == 2 and tracker.connected.is_set())
            second = str(uuid.uuid4())
            waiter = tracker.watch(second)
            await comfy.submit(graph, prompt_id=second, client_id=tracker.client_id)
            tracker.submitted(waiter)
            outputs = await asyncio.wait_for(asyncio.shield(waiter.done), 30)
            assert waiter.started_at is not None  # settled by its events this time
            remove_outputs(gateway, outputs)
        finally:
            await tracker.close()


def comfy_queue(gateway: Gateway) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{gateway.comfy_url}/queue", timeout=5).json()
    return answer


@pytest.mark.parametrize("how", ["clear", "delete"])
def test_a_job_removed_from_comfyui_behind_the_gateway_ends(gateway: Gateway, how: str) -> None:
    """An operator clears ComfyUI's queue (or deletes one prompt) in ComfyUI itself."""
    with ThreadPoolExecutor(2) as pool, gateway.client() as c:
        running = pool.submit(post, gateway, slow_graph(seed=41), f"behind-run-{how}")
        wait_for_status(c, f"behind-run-{how}", "running")
        queued = pool.submit(post, gateway, empty_image(0x0000AA), f"behind-queued-{how}")
        wait_for_status(c, f"behind-queued-{how}", "queued")
        [entry] = comfy_queue(gateway)["queue_pending"]
        command = {"clear": True} if how == "clear" else {"delete": [entry[1]]}
        assert httpx.post(f"{gateway.comfy_url}/queue", json=command).status_code == 200

        answer = queued.result(timeout=30)
        assert answer.status_code == 409, answer.text
        assert answer.json()["code"] == "interrupted"
        assert "outside the gateway" in answer.json()["error"]
        assert c.get(f"/prompt/behind-queued-{how}").json()["status"] == "interrupted"
        assert not running.done()  # the running job is untouched
        assert c.post("/interrupt", json={"id": f"behind-run-{how}"}).status_code == 200
        assert running.result(timeout=30).status_code == 409
        wait_for_comfy_queue(gateway, running=0)
