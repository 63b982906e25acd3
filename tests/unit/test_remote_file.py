"""RemoteFile: a fleet's output fetched from the gateway that ran the job, over a real loopback
HTTP server that sends the bytes in odd pieces, as a network may; its base64, made piece by
piece, stays whole."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator

import pytest

from app.core.errors import OutputsUnavailable
from app.core.outcome import CHUNK_BYTES, ResultFile
from app.core.remote_file import SECRET_HEADER, RemoteFile

SECRET = "fleet-secret-0123456789"
DATA = os.urandom(2 * CHUNK_BYTES + 12_345)  # three pieces, the last not a multiple of 3
ODD_SIZES = (1, 7, 4097, 65_537, 100_003, 1_000_001)


async def serve(writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
    writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode())
    start, turn = 0, 0
    while start < len(body):  # written and flushed in odd pieces
        size = ODD_SIZES[turn % len(ODD_SIZES)]
        writer.write(body[start : start + size])
        await writer.drain()
        start, turn = start + size, turn + 1
    writer.close()


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[str, list[str]]]:
    """A loopback server like a gateway's files endpoint: DATA at /f, 404 elsewhere; the
    secrets it was sent."""
    seen: list[str] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        path = head.split(" ")[1]
        for line in head.split("\r\n"):
            name, _, value = line.partition(": ")
            if name.lower() == SECRET_HEADER.lower():
                seen.append(value)
        await serve(writer, 200 if path == "/f" else 404, DATA if path == "/f" else b"")

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}", seen


async def test_a_remote_files_base64_is_whole_piece_by_piece_over_odd_http_pieces(
    gateway: tuple[str, list[str]],
) -> None:
    url, seen = gateway
    file = ResultFile("noise.png", len(DATA), "9", remote=RemoteFile(f"{url}/f", SECRET))
    pieces = [p async for p in file.base64_chunks()]
    assert b"".join(pieces) == base64.b64encode(DATA)
    assert all(not p.endswith(b"=") for p in pieces[:-1])  # no padding inside: aligned
    assert [len(p) for p in pieces[:-1]] == [len(base64.b64encode(b"x" * CHUNK_BYTES))] * 2
    assert b"".join(await asyncio.to_thread(lambda: list(file.iter_base64()))) == b"".join(pieces)
    assert seen == [SECRET, SECRET]


@pytest.mark.parametrize("size", [4097, CHUNK_BYTES])
async def test_any_http_pieces_are_cut_again_to_the_size_asked_for(
    gateway: tuple[str, list[str]], size: int
) -> None:
    url, _ = gateway
    remote = RemoteFile(f"{url}/f", SECRET)
    out = [p async for p in remote.chunks(size)]
    assert b"".join(out) == DATA
    assert all(len(p) == size for p in out[:-1]) and 0 < len(out[-1]) <= size
    again = await asyncio.to_thread(lambda: list(remote.iter_chunks(size)))
    assert again == out


async def test_a_file_the_gateway_no_longer_has_or_a_gateway_gone_is_a_clear_error(
    gateway: tuple[str, list[str]],
) -> None:
    url, _ = gateway
    gone = RemoteFile(f"{url}/other", SECRET)
    with pytest.raises(OutputsUnavailable, match="no longer keeps them") as raised:
        _ = [p async for p in gone.chunks(CHUNK_BYTES)]
    assert raised.value.status == 502 and raised.value.details == {"gateway": url}
    with pytest.raises(OutputsUnavailable, match="cannot be reached"):
        await RemoteFile("http://127.0.0.1:9/f", SECRET).check()  # the discard port: refused
