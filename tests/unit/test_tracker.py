"""PromptTracker against a fake ComfyUI that replays recorded ComfyUI 0.3.75 messages.

The fake is one real FastAPI app served by uvicorn on a loopback port: `/ws` sends what a test
queues (after the `status` greeting ComfyUI sends on connect), `/queue` and `/history/{id}`
answer what a test sets. Nothing of the gateway's own code is replaced.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
import uvicorn
from fastapi import FastAPI, WebSocket
from fastapi.responses import JSONResponse

from app.comfy.client import ComfyClient
from app.comfy.events import Progress, PromptWaiter
from app.comfy.previews import FEATURE_FLAGS, PreviewFrame
from app.comfy.tracker import PromptTracker
from app.core.errors import ComfyUnavailable, ExecutionFailed, GatewayError, Interrupted
from tests.unit.test_previews import jpeg, metadata_frame, plain_frame

# One fake ComfyUI serves the whole module (uvicorn takes ~0.1 s to stop); each test gets it
# with its script cleared and its own tracker, so all tests here share the module's loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")

CLIENT_ID = "gw-test-client"
TIMESTAMP = 1732300000000

Message = dict[str, Any] | str | bytes


class Close:
    """Queued on the fake's socket: close it with this code (a dropped event stream)."""

    def __init__(self, code: int = 1000) -> None:
        self.code = code


class FakeComfy:
    """The part of ComfyUI's server the tracker talks to, scripted by the test."""

    def __init__(self) -> None:
        self.app = FastAPI()
        self.base_url = ""
        self.client_ids: list[str | None] = []  # the clientId of each websocket connection
        self.received: list[str] = []  # text messages from the tracker, in order
        self.requests: list[str] = []  # HTTP paths asked for, in order
        self.history: dict[str, dict[str, Any]] = {}
        self.queue_running: list[str] = []
        self.queue_pending: list[str] = []
        self.history_broken = False  # answer /history with a 500
        self.outbox: asyncio.Queue[Message | Close] = asyncio.Queue()
        self.app.add_api_websocket_route("/ws", self._ws)
        self.app.add_api_route("/queue", self._queue)
        self.app.add_api_route("/history/{prompt_id}", self._history)

    def reset(self) -> None:
        self.client_ids.clear()
        self.received.clear()
        self.requests.clear()
        self.history.clear()
        self.queue_running.clear()
        self.queue_pending.clear()
        self.history_broken = False

    def send(self, *messages: Message | Close) -> None:
        """Queue messages for the socket connected now."""
        for message in messages:
            self.outbox.put_nowait(message)

    async def _queue(self) -> dict[str, Any]:
        self.requests.append("/queue")

        def items(ids: list[str]) -> list[list[Any]]:
            return [[n, pid, {}, {"client_id": CLIENT_ID}, ["9"]] for n, pid in enumerate(ids)]

        return {
            "queue_running": items(self.queue_running),
            "queue_pending": items(self.queue_pending),
        }

    async def _history(self, prompt_id: str) -> Any:
        self.requests.append(f"/history/{prompt_id}")
        if self.history_broken:
            return JSONResponse({"error": "boom"}, status_code=500)
        entry = self.history.get(prompt_id)
        return {prompt_id: entry} if entry is not None else {}

    async def _ws(self, websocket: WebSocket) -> None:
        self.client_ids.append(websocket.query_params.get("clientId"))
        # A fresh outbox before the handshake ends: once the tracker is connected, send() and
        # this connection agree on where messages go.
        outbox: asyncio.Queue[Message | Close] = asyncio.Queue()
        self.outbox = outbox
        await websocket.accept()
        sid = websocket.query_params.get("clientId")
        await websocket.send_text(json.dumps(status(0, sid=sid)))
        pump = asyncio.create_task(self._pump(websocket, outbox))
        try:
            while (message := await websocket.receive())["type"] != "websocket.disconnect":
                if message.get("text") is not None:
                    self.received.append(message["text"])
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)

    async def _pump(self, websocket: WebSocket, outbox: asyncio.Queue[Message | Close]) -> None:
        while True:
            message = await outbox.get()
            if isinstance(message, Close):
                await websocket.close(message.code)
                return
            if isinstance(message, bytes):
                await websocket.send_bytes(message)
            elif isinstance(message, str):
                await websocket.send_text(message)
            else:
                await websocket.send_text(json.dumps(message))


# -- recorded ComfyUI 0.3.75 messages ---------------------------------------------------------


def status(queue_remaining: int, sid: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"status": {"exec_info": {"queue_remaining": queue_remaining}}}
    if sid is not None:
        data["sid"] = sid
    return {"type": "status", "data": data}


def event(kind: str, prompt_id: str, **data: Any) -> dict[str, Any]:
    return {"type": kind, "data": {**data, "prompt_id": prompt_id}}


OUTPUT = {"images": [{"filename": "a_00001_.png", "subfolder": "", "type": "output"}]}
TENSOR = "tensor([[[[0.5000, 0.5000, 0.5000],\n          [0.5000, 0.5000, 0.5000]]]])"


def started(pid: str) -> list[dict[str, Any]]:
    return [
        event("execution_start", pid, timestamp=TIMESTAMP),
        event("execution_cached", pid, nodes=[], timestamp=TIMESTAMP),
        event("executing", pid, node="1", display_node="1"),
        event("progress", pid, value=1, max=2, node="1"),
    ]


def succeeded(pid: str) -> list[dict[str, Any]]:
    return [
        event("executing", pid, node="2", display_node="2"),
        event("executed", pid, node="2", display_node="2", output=OUTPUT),
        event("execution_success", pid, timestamp=TIMESTAMP),
        status(0),
        event("executing", pid, node=None),
    ]


def error_data(pid: str) -> dict[str, Any]:
    return {
        "prompt_id": pid,
        "node_id": "2",
        "node_type": "ImageToMask",
        "executed": ["1"],
        "exception_message": "Image must have an alpha channel\n",
        "exception_type": "RuntimeError",
        "traceback": [
            '  File "/comfy/execution.py", line 496, in execute\n    output_data = ...\n',
            '  File "/comfy/comfy_extras/nodes_mask.py", line 112, in image_to_mask\n',
        ],
        "current_inputs": {"image": [TENSOR], "channel": ["alpha"]},
        "current_outputs": {},
        "timestamp": TIMESTAMP,
    }


def failed(pid: str) -> list[dict[str, Any]]:
    return [
        event("executing", pid, node="2", display_node="2"),
        {"type": "execution_error", "data": error_data(pid)},
        status(0),
        event("executing", pid, node=None),
    ]


def interrupted(pid: str) -> list[dict[str, Any]]:
    return [
        event(
            "execution_interrupted",
            pid,
            node_id="1",
            node_type="KSampler",
            executed=[],
            timestamp=TIMESTAMP,
        ),
        status(0),
        event("executing", pid, node=None),
    ]


def history_entry(pid: str, kind: str) -> dict[str, Any]:
    """A /history/{id} entry as ComfyUI 0.3.75 writes it when a prompt ends."""
    messages: list[list[Any]] = [
        ["execution_start", {"prompt_id": pid, "timestamp": TIMESTAMP}],
        ["execution_cached", {"nodes": [], "prompt_id": pid, "timestamp": TIMESTAMP}],
    ]
    outputs: dict[str, Any] = {}
    if kind == "success":
        messages.append(["execution_success", {"prompt_id": pid, "timestamp": TIMESTAMP}])
        outputs = {"2": OUTPUT}
    elif kind == "error":
        messages.append(["execution_error", error_data(pid)])
    else:
        data = {"prompt_id": pid, "node_id": "1", "node_type": "KSampler", "executed": []}
        messages.append(["execution_interrupted", {**data, "timestamp": TIMESTAMP}])
    return {
        "prompt": [0, pid, {}, {"client_id": CLIENT_ID}, ["2"]],
        "outputs": outputs,
        "status": {
            "status_str": "success" if kind == "success" else "error",
            "completed": kind == "success",
            "messages": messages,
        },
        "meta": {"2": {"node_id": "2", "display_node": "2", "real_node_id": "2"}},
    }


# -- fixtures and helpers ---------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def comfy_server() -> AsyncIterator[FakeComfy]:
    fake = FakeComfy()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    fake.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(fake.app, lifespan="off", log_level="warning", ws="websockets-sansio")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    await eventually(lambda: server.started)
    yield fake
    server.should_exit = True
    await asyncio.wait_for(serving, 5)
    sock.close()


@pytest_asyncio.fixture(loop_scope="module")
async def comfy(comfy_server: FakeComfy) -> FakeComfy:
    comfy_server.reset()
    return comfy_server


@pytest_asyncio.fixture(loop_scope="module")
async def tracker(comfy: FakeComfy) -> AsyncIterator[PromptTracker]:
    client = ComfyClient(comfy.base_url, timeout_s=5)
    tracker = PromptTracker(client, client_id=CLIENT_ID, max_backoff_s=0.1)
    tracker.start()
    try:
        await tracker.wait_connected(5)
        yield tracker
    finally:
        await tracker.close()
        await client.aclose()


async def eventually(condition: Callable[[], bool], timeout_s: float = 5) -> None:
    """Poll state the tracker and uvicorn keep (they offer no event for it)."""
    step_s = 0.005
    for _ in range(int(timeout_s / step_s)):
        if condition():
            return
        await asyncio.sleep(step_s)
    raise TimeoutError(f"still false after {timeout_s}s")


async def result(waiter: PromptWaiter) -> dict[str, Any]:
    return await asyncio.wait_for(asyncio.shield(waiter.done), 5)


async def error(waiter: PromptWaiter) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        await result(waiter)
    return caught.value


def submitted(tracker: PromptTracker, prompt_id: str) -> PromptWaiter:
    waiter = tracker.watch(prompt_id)
    tracker.submitted(waiter)
    return waiter


async def drop(comfy: FakeComfy, code: int = 1000) -> None:
    """Close the event stream and wait until the tracker has connected again."""
    connections = len(comfy.client_ids)
    comfy.send(Close(code))
    await eventually(lambda: len(comfy.client_ids) > connections)


# -- tests ------------------------------------------------------------------------------------


async def test_connects_with_its_client_id(comfy: FakeComfy, tracker: PromptTracker) -> None:
    assert comfy.client_ids == [CLIENT_ID]
    assert tracker.connected.is_set()
    assert tracker.ws_url == f"{comfy.base_url.replace('http', 'ws')}/ws?clientId={CLIENT_ID}"


async def test_queue_depth_follows_status(comfy: FakeComfy, tracker: PromptTracker) -> None:
    for remaining in (3, 1, 0):
        comfy.send(status(remaining))
        await eventually(lambda r=remaining: tracker.queue_depth == r)


async def test_success(comfy: FakeComfy, tracker: PromptTracker) -> None:
    waiter = submitted(tracker, "p1")
    comfy.send(*started("p1"))
    await eventually(lambda: waiter.progress == Progress(1, 2, "1"))
    assert waiter.started_at is not None
    assert not waiter.done.done()
    comfy.send(*succeeded("p1"))
    assert await result(waiter) == {"2": OUTPUT}
    assert comfy.requests == []  # no reconnect, so no need to ask /history


async def test_execution_error(comfy: FakeComfy, tracker: PromptTracker) -> None:
    waiter = submitted(tracker, "p1")
    comfy.send(*started("p1"), *failed("p1"))
    failure = await error(waiter)
    assert isinstance(failure, ExecutionFailed)
    assert failure.status == 502
    assert failure.location == "prompt.2"
    assert failure.details == {
        "node_id": "2",
        "class_type": "ImageToMask",
        "exception_type": "RuntimeError",
        "exception_message": "Image must have an alpha channel",
    }
    assert "ImageToMask" in failure.message
    assert "alpha channel" in failure.message
    rendered = json.dumps(failure.body())
    for leaked in ("tensor(", "current_inputs", "0.5000", "nodes_mask.py", "traceback"):
        assert leaked not in rendered


async def test_interrupted(comfy: FakeComfy, tracker: PromptTracker) -> None:
    waiter = submitted(tracker, "p1")
    comfy.send(*started("p1"), *interrupted("p1"))
    failure = await error(waiter)
    assert isinstance(failure, Interrupted)
    assert "KSampler" in failure.message


async def test_other_prompts_do_not_touch_a_waiter(
    comfy: FakeComfy, tracker: PromptTracker
) -> None:
    mine = submitted(tracker, "mine")
    other = submitted(tracker, "other")
    comfy.send(*started("stranger"), *failed("stranger"), *interrupted("stranger"))
    comfy.send(*started("other"), *succeeded("other"))
    assert await result(other) == {"2": OUTPUT}
    assert not mine.done.done()
    assert mine.outputs == {}
    assert mine.progress == Progress()
    assert mine.started_at is None
    comfy.send(*started("mine"), *interrupted("mine"))
    assert isinstance(await error(mine), Interrupted)


async def test_first_ending_wins(comfy: FakeComfy, tracker: PromptTracker) -> None:
    waiter = submitted(tracker, "p1")
    comfy.send(*failed("p1"), *succeeded("p1"))
    assert isinstance(await error(waiter), ExecutionFailed)


JUNK: list[Any] = [
    b"\x00\x00\x00\x01\x00\x00\x00\x02\x89PNG latent preview",
    "not json at all",
    "[1, 2, 3]",
    '"a string"',
    '{"data": {"prompt_id": "p1"}}',
    '{"type": "progress", "data": null}',
    '{"type": "executing", "data": {"node": null}}',
    pytest.param('{"type": "executing", "data": "p1"}', id="data-not-an-object"),
    pytest.param('{"type": "status", "data": {"status": null}}', id="status-null"),
]


@pytest.mark.parametrize("junk", JUNK)
async def test_junk_is_ignored(comfy: FakeComfy, tracker: PromptTracker, junk: Any) -> None:
    waiter = submitted(tracker, "p1")
    comfy.send(*started("p1"), junk, *succeeded("p1"))
    assert await result(waiter) == {"2": OUTPUT}
    assert len(comfy.client_ids) == 1


@pytest.mark.parametrize("code", [1000, 1011], ids=["clean-close", "error-close"])
@pytest.mark.parametrize(
    ("ended", "expected"),
    [
        ("success", {"2": OUTPUT}),
        ("error", ExecutionFailed),
        ("interrupted", Interrupted),
    ],
)
async def test_drop_then_settled_from_history(
    comfy: FakeComfy, tracker: PromptTracker, ended: str, expected: Any, code: int
) -> None:
    waiter = submitted(tracker, "p1")
    comfy.send(*started("p1"))
    await eventually(lambda: waiter.started_at is not None)
    comfy.history["p1"] = history_entry("p1", ended)
    await drop(comfy, code)
    if isinstance(expected, dict):
        assert await result(waiter) == expected
    else:
        failure = await error(waiter)
        assert isinstance(failure, expected)
        if isinstance(failure, ExecutionFailed):
            assert failure.details is not None
            assert failure.details["node_id"] == "2"
            assert failure.details["class_type"] == "ImageToMask"
            assert "tensor(" not in json.dumps(failure.body())
    assert comfy.client_ids == [CLIENT_ID, CLIENT_ID]
    assert "/history/p1" in comfy.requests


async def test_drop_keeps_outputs_seen_before(comfy: FakeComfy, tracker: PromptTracker) -> None:
    waiter = submitted(tracker, "p1")
    early = {"images": [{"filename": "early.png", "subfolder": "", "type": "output"}]}
    comfy.send(*started("p1"), event("executed", "p1", node="1", display_node="1", output=early))
    await eventually(lambda: "1" in waiter.outputs)
    comfy.history["p1"] = history_entry("p1", "success")
    await drop(comfy)
    assert await result(waiter) == {"1": early, "2": OUTPUT}


async def test_drop_then_job_lost(comfy: FakeComfy, tracker: PromptTracker) -> None:
    waiter = submitted(tracker, "p1")
    comfy.send(*started("p1"))
    await eventually(lambda: waiter.started_at is not None)
    await drop(comfy, 1011)
    failure = await error(waiter)
    assert isinstance(failure, ComfyUnavailable)
    assert failure.headers["Retry-After"]
    assert comfy.requests[0] == "/queue"


async def test_drop_then_history_unanswered_fails_rather_than_hangs(
    comfy: FakeComfy, tracker: PromptTracker
) -> None:
    waiter = submitted(tracker, "p1")
    comfy.queue_running.append("p1")
    comfy.history_broken = True
    await drop(comfy)
    failure = await error(waiter)
    assert isinstance(failure, ComfyUnavailable)
    assert "lost track of the job" in failure.message


@pytest.mark.parametrize("where", ["queue_running", "queue_pending"])
async def test_drop_while_still_queued(
    comfy: FakeComfy, tracker: PromptTracker, where: str
) -> None:
    waiter = submitted(tracker, "p1")
    getattr(comfy, where).append("p1")
    await drop(comfy)
    await eventually(lambda: "/history/p1" in comfy.requests)
    await asyncio.sleep(0.05)
    assert not waiter.done.done()
    comfy.send(*started("p1"), *succeeded("p1"))
    assert await result(waiter) == {"2": OUTPUT}


async def test_submitted_after_a_reconnect_is_checked(
    comfy: FakeComfy, tracker: PromptTracker
) -> None:
    waiter = tracker.watch("p1")
    await drop(comfy)
    await eventually(lambda: tracker.generation == waiter.generation + 1)
    # The prompt was queued while the stream was down and its events went to the old socket.
    comfy.history["p1"] = history_entry("p1", "success")
    tracker.submitted(waiter)
    assert await result(waiter) == {"2": OUTPUT}


async def test_unsubmitted_waiter_is_not_checked(comfy: FakeComfy, tracker: PromptTracker) -> None:
    waiter = tracker.watch("p1")
    await drop(comfy)
    await eventually(lambda: tracker.generation == waiter.generation + 1)
    await asyncio.sleep(0.05)
    assert not waiter.done.done()
    assert comfy.requests == []


async def test_no_comfy_no_connection() -> None:
    # Nothing listens on this port: the tracker keeps trying and never claims to be connected.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    client = ComfyClient(dead_url, timeout_s=1)
    tracker = PromptTracker(client, client_id=CLIENT_ID, max_backoff_s=0.05)
    tracker.start()
    try:
        with pytest.raises(TimeoutError):
            await tracker.wait_connected(0.2)
        assert tracker.generation == 0
    finally:
        await tracker.close()
        await client.aclose()


def progress_state(pid: str, **nodes: tuple[str, float, float]) -> dict[str, Any]:
    """ComfyUI's per-node progress: node id -> (state, value, max)."""
    states = {
        node: {"value": value, "max": most, "state": state, "node_id": node, "prompt_id": pid,
               "display_node_id": node, "parent_node_id": None, "real_node_id": node}
        for node, (state, value, most) in nodes.items()
    }  # fmt: skip
    return event("progress_state", pid, nodes=states)


async def test_each_step_reaches_the_job_once(comfy: FakeComfy, tracker: PromptTracker) -> None:
    """Newer ComfyUI reports a step both as `progress` and in `progress_state`; a node may
    report only in `progress_state`. The job hears of every step, and of each step once."""
    waiter = submitted(tracker, "p1")
    heard: list[tuple[int, int, str | None]] = []
    waiter.on_event = lambda kind, data: (
        heard.append((data["value"], data["max"], data["node"])) if kind == "progress" else None
    )
    comfy.send(
        event("execution_start", "p1", timestamp=TIMESTAMP),
        event("executing", "p1", node="5", display_node="5"),
        progress_state("p1", **{"1": ("finished", 1, 1), "5": ("running", 0, 1)}),
        event("progress", "p1", value=1, max=8, node="5"),
        progress_state("p1", **{"1": ("finished", 1, 1), "5": ("running", 1, 8)}),
        progress_state("p1", **{"1": ("finished", 1, 1), "5": ("running", 2.0, 8.0)}),
        progress_state("p1", **{"5": ("finished", 8, 8)}),
        *succeeded("p1"),
    )
    await result(waiter)
    assert heard == [(1, 8, "5"), (2, 8, "5")]


async def test_a_prompt_removed_from_comfyuis_queue_ends(
    comfy: FakeComfy, tracker: PromptTracker
) -> None:
    """ComfyUI's queue shrinks below what the gateway waits for, with no end event."""
    kept, removed = submitted(tracker, "p1"), submitted(tracker, "p2")
    comfy.queue_running = ["p1"]
    comfy.send(status(1))
    failure = await error(removed)
    assert isinstance(failure, Interrupted)
    assert "outside the gateway" in failure.message
    assert not kept.done.done()  # still running in ComfyUI


async def test_a_shrinking_queue_that_still_holds_the_prompts_settles_nothing(
    comfy: FakeComfy, tracker: PromptTracker
) -> None:
    waiter = submitted(tracker, "p1")
    comfy.queue_pending = ["p1"]
    comfy.send(status(0))  # a stale count: the prompt is still there
    await eventually(lambda: "/history/p1" in comfy.requests)
    await asyncio.sleep(0.05)
    assert not waiter.done.done()


async def test_a_silent_stream_is_checked_and_replaced(comfy: FakeComfy) -> None:
    """No event arrives, yet ComfyUI finished the prompt: settled over HTTP, stream replaced."""
    client = ComfyClient(comfy.base_url, timeout_s=5)
    tracker = PromptTracker(client, client_id=CLIENT_ID, max_backoff_s=0.1, silence_s=0.2)
    tracker.start()
    try:
        await tracker.wait_connected(5)
        waiter = submitted(tracker, "p1")
        comfy.queue_running = ["p1"]
        comfy.send(event("execution_start", "p1", timestamp=TIMESTAMP))
        await eventually(lambda: waiter.started_at is not None)
        await asyncio.sleep(0.5)  # silent, and ComfyUI says it still runs: nothing to do
        assert not waiter.done.done() and tracker.reconnects_forced == 0
        comfy.queue_running = []
        comfy.history["p1"] = history_entry("p1", "success")
        assert await result(waiter) == {"2": OUTPUT}
        await eventually(lambda: len(comfy.client_ids) == 2)
        assert tracker.reconnects_forced == 1
    finally:
        await tracker.close()
        await client.aclose()


# -- the tracker ------------------------------------------------------------------------------


def listen(waiter: PromptWaiter) -> list[tuple[PreviewFrame, str | None]]:
    heard: list[tuple[PreviewFrame, str | None]] = []
    waiter.on_preview = lambda frame, node: heard.append((frame, node))
    return heard


async def test_tracker_asks_for_previews_with_metadata_first(
    comfy: FakeComfy, tracker: PromptTracker
) -> None:
    await eventually(lambda: bool(comfy.received))
    assert comfy.received[0] == FEATURE_FLAGS


async def test_a_preview_with_metadata_goes_to_its_prompt(
    comfy: FakeComfy, tracker: PromptTracker
) -> None:
    mine, other = submitted(tracker, "p1"), submitted(tracker, "p2")
    heard, theirs = listen(mine), listen(other)
    image = jpeg()
    comfy.send(metadata_frame(image, prompt_id="p1", node_id="3", display_node_id="3"))
    await eventually(lambda: bool(heard))
    assert heard == [(PreviewFrame(image, "image/jpeg", "p1", "3"), "3")]
    assert theirs == []


async def test_a_plain_preview_goes_to_the_prompt_executing(
    comfy: FakeComfy, tracker: PromptTracker
) -> None:
    mine, other = submitted(tracker, "p1"), submitted(tracker, "p2")
    heard, theirs = listen(mine), listen(other)
    image = jpeg()
    comfy.send(event("execution_start", "p1"), event("executing", "p1", node="5"))
    comfy.send(plain_frame(image))
    await eventually(lambda: bool(heard))
    assert heard == [(PreviewFrame(image, "image/jpeg"), "5")]
    # once the prompt is done, a frame names no prompt and goes nowhere
    comfy.send(event("executing", "p1", node=None), plain_frame(image))
    comfy.send(event("execution_start", "p2"), event("executing", "p2", node="9"))
    comfy.send(plain_frame(image))
    await eventually(lambda: bool(theirs))
    assert len(heard) == 1 and theirs[0][1] == "9"
