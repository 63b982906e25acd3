"""/comfy/<path>: what goes on to ComfyUI and what comes back, against a fake ComfyUI transport."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Message

from app.compat.comfy.proxy import request_headers
from app.compat.comfy.request import upstream_target
from app.core.settings import load_settings
from app.main import create_app
from tests.gateway_process import free_port

KEY = "k" * 32


class FakeComfy(httpx.AsyncBaseTransport):
    """Records what reaches ComfyUI, chunk by chunk, and answers in several chunks.

    A transport of its own because MockTransport reads the whole body before its handler runs.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[httpx.Request, list[bytes]]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        chunks = [chunk async for chunk in request.stream]  # type: ignore[union-attr]
        self.requests.append((request, chunks))

        async def body() -> AsyncIterator[bytes]:
            for part in (b'{"seen": ', json.dumps(len(b"".join(chunks))).encode(), b"}"):
                yield part

        headers = [
            ("content-type", "application/json"),
            ("x-comfy", "1"),
            ("x-comfy", "2"),
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
        ]
        return httpx.Response(201, headers=headers, stream=Chunks(body()))


class Chunks(httpx.AsyncByteStream):
    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.chunks:
            yield chunk


class PromptComfy(FakeComfy):
    """Answers POST /prompt as ComfyUI does, with the prompt id it queued, in two chunks."""

    def __init__(self, prompt_id: str) -> None:
        super().__init__()
        self.prompt_id = prompt_id

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != "/prompt":
            return await super().handle_async_request(request)
        self.requests.append((request, [await request.aread()]))
        answer = json.dumps({"prompt_id": self.prompt_id, "number": 3, "node_errors": {}})

        async def body() -> AsyncIterator[bytes]:
            yield answer[:10].encode()
            yield answer[10:].encode()

        return httpx.Response(
            200, headers={"content-type": "application/json"}, stream=Chunks(body())
        )


def make_app(
    tmp_path: Path, fake: FakeComfy | None = None, **settings: Any
) -> tuple[FastAPI, FakeComfy]:
    app = create_app(
        load_settings(workflow_dir=tmp_path, comfyui_port_host=free_port(), **settings)
    )
    gateway = app.state.gateway
    gateway.pool.first.process.proc = SimpleNamespace(returncode=None)  # as if ComfyUI were running
    fake = fake or FakeComfy()
    # The passthrough's own connections (app.gateway.comfy), apart from the jobs'.
    gateway.comfy.http = httpx.AsyncClient(
        transport=fake, base_url=gateway.pool.first.client.base_url
    )
    return app, fake


@pytest.fixture
async def proxied(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, FakeComfy]]:
    app, fake = make_app(tmp_path, max_body_size_mb=0.001, api_keys=KEY)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://gateway", headers=headers
    ) as client:
        yield client, fake


async def test_request_and_answer_pass_through_as_sent_in_full_mode(tmp_path: Path) -> None:
    app, fake = make_app(tmp_path, comfy_passthrough="full")
    async with gateway_client(app) as client:
        await pass_through(client, fake)


async def pass_through(client: httpx.AsyncClient, fake: FakeComfy) -> None:
    async def body() -> AsyncIterator[bytes]:
        for part in (b'{"prompt":', b" {}", b"}"):
            yield part

    response = await client.post(
        "/comfy/prompt?a=1&a=2&name=x%20y",
        content=body(),
        headers={"Origin": "http://app.example", "X-Custom": "kept", "Connection": "x-drop"},
    )
    assert response.status_code == 201
    assert response.json() == {"seen": 14}
    assert response.headers.get_list("x-comfy") == ["1", "2"]
    assert "keep-alive" not in response.headers
    (request, chunks) = fake.requests[0]
    assert request.method == "POST"
    assert request.url.raw_path == b"/prompt?a=1&a=2&name=x%20y"
    # Streamed: ComfyUI got the client's chunks one by one, not one joined body.
    assert [c for c in chunks if c] == [b'{"prompt":', b" {}", b"}"]
    assert request.headers["x-custom"] == "kept"
    for dropped in ("authorization", "origin", "x-drop"):
        assert dropped not in request.headers
    assert request.headers["host"] != "gateway"


async def test_get_has_no_body(proxied: tuple[httpx.AsyncClient, FakeComfy]) -> None:
    client, fake = proxied
    response = await client.get("/comfy/object_info/abc")
    assert response.status_code == 201
    request, chunks = fake.requests[0]
    assert request.url.path == "/object_info/abc"
    assert b"".join(chunks) == b""
    assert "transfer-encoding" not in request.headers


async def test_body_cap_applies(proxied: tuple[httpx.AsyncClient, FakeComfy]) -> None:
    client, fake = proxied

    async def big() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 500

    response = await client.post("/comfy/upload/image", content=big())
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    declared = await client.post("/comfy/upload/image", content=b"x" * 5000)
    assert declared.status_code == 413
    assert all(len(b"".join(chunks)) <= 1100 for _, chunks in fake.requests)


async def test_needs_an_api_key(proxied: tuple[httpx.AsyncClient, FakeComfy]) -> None:
    client, fake = proxied
    response = await client.get("/comfy/system_stats", headers={"Authorization": ""})
    assert response.status_code == 401
    assert fake.requests == []


@pytest.mark.parametrize("running", [True, False])
async def test_comfy_down_is_503(tmp_path: Path, running: bool) -> None:
    app = create_app(load_settings(workflow_dir=tmp_path, comfyui_port_host=free_port()))
    if running:  # running, but nothing listens: a connection error
        app.state.gateway.pool.first.process.proc = SimpleNamespace(returncode=None)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        response = await client.get("/comfy/system_stats")
    assert response.status_code == 503
    assert response.json()["code"] == "comfy_unavailable"
    assert set(response.json()) <= {"error", "code", "location", "details"}
    assert response.headers["retry-after"] == "5"


async def test_can_be_turned_off(tmp_path: Path) -> None:
    app, fake = make_app(tmp_path, comfy_passthrough=False)
    assert not any(getattr(r, "path", "").startswith("/comfy") for r in app.router.routes)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        response = await client.get("/comfy/system_stats")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert fake.requests == []


@pytest.mark.parametrize(
    ("raw", "query", "target"),
    [
        (b"/comfy/view", b"filename=a%20b.png&type=output", "/view?filename=a%20b.png&type=output"),
        (b"/comfy/", b"", "/"),
        (b"/comfy/object_info/KSampler", b"", "/object_info/KSampler"),
    ],
)
def test_upstream_target(raw: bytes, query: bytes, target: str) -> None:
    assert upstream_target(raw, query) == target


def test_request_headers_drop_hop_by_hop_and_keys() -> None:
    raw = [
        (b"host", b"gw"),
        (b"x-api-key", b"secret"),
        (b"te", b"trailers"),
        (b"accept", b"*/*"),
        (b"cookie", b"a=1"),
        (b"cookie", b"b=2"),
    ]
    assert request_headers(raw) == [("accept", "*/*"), ("cookie", "a=1"), ("cookie", "b=2")]


OURS = "0f9d8c61-6a0e-4c4e-9d54-3a5e3b6c2f10"


@asynccontextmanager
async def gateway_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client


@pytest.mark.parametrize(
    ("path", "sent"),
    [
        ("/comfy/queue", {"clear": True}),
        ("/comfy/interrupt", {}),
        ("/comfy/api/interrupt", {"prompt_id": OURS}),  # not submitted here
        ("/comfy/free", {"unload_models": True}),
        ("/comfy/userdata/x.json", {}),
        ("/comfy%2Fqueue", {"clear": True}),  # Starlette decodes; ComfyUI would get `%2Fqueue`
    ],
)
async def test_refused_requests_never_reach_comfyui(
    tmp_path: Path, path: str, sent: dict[str, Any]
) -> None:
    app, fake = make_app(tmp_path)
    async with gateway_client(app) as client:
        response = await client.post(path, json=sent)
    assert response.status_code == 403, response.text
    body = response.json()
    assert set(body) <= {"error", "code", "location", "details"}
    assert body["code"] == "forbidden"
    assert "COMFY_PASSTHROUGH=full" in body["error"]
    assert fake.requests == []


async def test_a_prompt_submitted_here_can_be_interrupted_and_deleted(tmp_path: Path) -> None:
    app, fake = make_app(tmp_path, PromptComfy(OURS))
    sent = b'{"prompt_id":  "%s"}' % OURS.encode()

    async def chunked() -> AsyncIterator[bytes]:
        yield sent[:7]
        yield sent[7:]

    async with gateway_client(app) as client:
        submitted = await client.post("/comfy/prompt", json={"prompt": {}, "prompt_id": OURS})
        assert submitted.status_code == 200
        assert submitted.json()["prompt_id"] == OURS  # the answer went on whole
        interrupted = await client.post("/comfy/interrupt", content=sent)
        streamed = await client.post("/comfy/interrupt", content=chunked())
        deleted = await client.post("/comfy/api/queue", json={"delete": [OURS]})
        cancelled = await client.post(f"/comfy/api/jobs/{OURS}/cancel")
    assert {r.status_code for r in (interrupted, streamed, deleted, cancelled)} == {201}
    paths = [request.url.path for request, _ in fake.requests]
    assert paths == [
        f"/history/{OURS}", "/queue",  # is the id the client chose new to ComfyUI?
        "/prompt", "/interrupt", "/interrupt", "/api/queue", f"/api/jobs/{OURS}/cancel",
    ]  # fmt: skip
    # The body that was read to decide went on as it was read, whole or chunked: re-encoded.
    for request, chunks in fake.requests[3:5]:
        assert b"".join(chunks) == b'{"prompt_id": "%s"}' % OURS.encode()
        assert request.headers["content-length"] == str(len(b"".join(chunks)))
        assert request.headers["content-type"] == "application/json"
        assert "transfer-encoding" not in request.headers


async def test_a_prompt_cannot_take_a_gateway_jobs_id(tmp_path: Path) -> None:
    app, fake = make_app(tmp_path, PromptComfy(OURS))
    app.state.gateway.pool.first.tracker.watch(OURS)  # a gateway job with the id the client chose
    async with gateway_client(app) as client:
        taken = await client.post("/comfy/prompt", json={"prompt": {}, "prompt_id": OURS})
        refused = await client.post("/comfy/queue", json={"delete": [OURS]})
    assert taken.status_code == 409, taken.text
    assert (taken.json()["code"], taken.json()["location"]) == ("conflict", "prompt_id")
    assert refused.status_code == 403
    assert fake.requests == []


async def test_full_forwards_everything(tmp_path: Path) -> None:
    app, fake = make_app(tmp_path, comfy_passthrough="full")
    async with gateway_client(app) as client:
        cleared = await client.post("/comfy/queue", json={"clear": True})
        freed = await client.post("/comfy/free", json={"unload_models": True})
    assert [cleared.status_code, freed.status_code] == [201, 201]
    assert [request.url.path for request, _ in fake.requests] == ["/queue", "/free"]


async def open_socket(app: FastAPI, path: str, query: bytes = b"") -> Message:
    """Open a websocket as a server would; the app's first answer."""
    scope = {
        "type": "websocket", "asgi": {"version": "3.0"}, "scheme": "ws", "path": path,
        "raw_path": path.encode(), "root_path": "", "query_string": query,
        "client": ("127.0.0.1", 9), "server": ("gateway", 80), "subprotocols": [], "headers": [],
        "extensions": {"websocket.http.response": {}},
    }  # fmt: skip
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]


@pytest.mark.parametrize("path", ["/ws", "/comfy/ws"])
@pytest.mark.parametrize("mode", ["true", "full", "false"])
async def test_the_websocket_is_also_at_the_root(tmp_path: Path, path: str, mode: str) -> None:
    app, _ = make_app(tmp_path, comfy_passthrough=mode)
    taken = f"clientId={app.state.gateway.pool.first.tracker.client_id}".encode()
    first = await open_socket(app, path)
    refused = await open_socket(app, path, taken)
    if mode == "false":  # no such route: Starlette closes before the handshake
        assert first == refused == {"type": "websocket.close", "code": 1000, "reason": ""}
    else:
        assert first["status"] == 503  # the relay tried ComfyUI, which is not listening here
        assert refused["status"] == 409  # the gateway's own clientId, at either path
