"""Wire, the lean client of the gateway's own ComfyUI: against a real aiohttp server (ComfyUI's)
for what ComfyUI answers, and a raw loopback server for the answers HTTP allows besides."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from app.comfy.wire import Wire, WireError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def aiohttp_server() -> AsyncIterator[tuple[str, list[object]]]:
    """Like ComfyUI's server: JSON echo at /echo, a chunked answer at /chunked, 400 at /bad;
    keeps connections alive 0.2 s (so a test can outlive one). Yields its URL and the
    connections (transports) requests came on."""
    transports: list[object] = []

    async def echo(request: web.Request) -> web.Response:
        transports.append(request.transport)
        body = await request.read()
        return web.json_response(
            {"method": request.method, "path": request.raw_path, "body": body.decode()}
        )

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for piece in (b'{"a": ', b"[1, 2, ", b"3]}"):
            await response.write(piece)
        await response.write_eof()
        return response

    async def bad(request: web.Request) -> web.Response:
        return web.json_response({"error": {"type": "prompt_no_outputs"}}, status=400)

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/chunked", chunked)
    app.router.add_post("/bad", bad)
    runner = web.AppRunner(app, keepalive_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", transports
    finally:
        await runner.cleanup()


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Starts loopback servers that answer with the handler given; yields a starter."""
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await handler(reader, writer)
            finally:
                writer.close()

        server = await asyncio.start_server(closing, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_a_json_post_and_get_come_back_over_one_kept_alive_connection(
    aiohttp_server: tuple[str, list[object]],
) -> None:
    url, transports = aiohttp_server
    wire = Wire(url, timeout_s=5)
    try:
        posted = await wire.post("/echo", {"prompt": {"1": "é"}})
        got = await wire.get("/echo", {"limit": "1", "q": "a b"})
    finally:
        await wire.aclose()
    assert posted.status_code == 200
    assert posted.json() == {
        "method": "POST",
        "path": "/echo",
        "body": '{"prompt":{"1":"é"}}',
    }
    assert got.json()["path"] == "/echo?limit=1&q=a+b"
    assert len(transports) == 2 and transports[0] is transports[1]


async def test_a_chunked_answer_and_an_error_status_are_read_whole(
    aiohttp_server: tuple[str, list[object]],
) -> None:
    url, _ = aiohttp_server
    wire = Wire(url, timeout_s=5)
    try:
        assert (await wire.get("/chunked")).json() == {"a": [1, 2, 3]}
        bad = await wire.post("/bad", {})
        assert (await wire.get("/chunked")).json() == {"a": [1, 2, 3]}  # the connection is fine
    finally:
        await wire.aclose()
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "prompt_no_outputs"


async def test_a_kept_alive_connection_the_server_closed_is_replaced_once(
    aiohttp_server: tuple[str, list[object]],
) -> None:
    url, transports = aiohttp_server
    wire = Wire(url, timeout_s=5)
    try:
        await wire.post("/echo", {"n": 1})
        await asyncio.sleep(0.6)  # past the server's keep-alive: it closes the connection
        second = await wire.post("/echo", {"n": 2})
    finally:
        await wire.aclose()
    assert second.json()["body"] == '{"n":2}'
    assert transports[0] is not transports[1]


async def test_a_target_with_line_breaks_is_encoded_and_cannot_add_a_header(
    aiohttp_server: tuple[str, list[object]],
) -> None:
    url, transports = aiohttp_server
    wire = Wire(url, timeout_s=5)
    try:
        answer = await wire.get("/echo?id=x y\r\nX-Injected: 1\r\n\r\nGET /echo")
    finally:
        await wire.aclose()
    assert answer.json()["path"] == "/echo?id=x%20y%0D%0AX-Injected:%201%0D%0A%0D%0AGET%20/echo"
    assert len(transports) == 1


async def test_an_answer_without_a_length_is_read_to_the_end_and_not_kept(
    raw_server: Callable[[Handler], Awaitable[str]],
) -> None:
    connections = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n")
        writer.write(b'{"up to": "the end"}')
        await writer.drain()
        writer.close()

    wire = Wire(await raw_server(answer), timeout_s=5)
    try:
        assert (await wire.get("/")).json() == {"up to": "the end"}
        assert (await wire.get("/")).json() == {"up to": "the end"}
    finally:
        await wire.aclose()
    assert connections == 2


async def test_refused_silent_and_garbled_servers_are_wire_errors(
    raw_server: Callable[[Handler], Awaitable[str]],
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes

    async def garbled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        await reader.read()

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")
        await writer.drain()
        writer.close()

    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    free_port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    cases = {
        "cannot connect": f"http://127.0.0.1:{free_port}",
        "no answer within 0.3 s": await raw_server(silent),
        "not an HTTP/1 answer": await raw_server(garbled),
        "a broken answer": await raw_server(cut),
    }
    for expected, url in cases.items():
        wire = Wire(url, timeout_s=0.3)
        with pytest.raises(WireError, match=expected):
            await wire.post("/prompt", {"prompt": {}})
        await wire.aclose()


def test_only_plain_http_to_a_host_and_port() -> None:
    with pytest.raises(ValueError, match="plain HTTP"):
        Wire("https://127.0.0.1:8188", timeout_s=1)
    assert Wire("http://[::1]:8188", timeout_s=1)._head_tail.startswith("Host: [::1]:8188\r\n")
