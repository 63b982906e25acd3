"""FileBody: an output file as an HTTP body, whole or one range, streamed from memory or from
disk (a range of a file on disk read from its first byte), with its length; HEAD reads nothing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from app.compat.file_body import FileBody, ranged
from app.core.outcome import CHUNK_BYTES, ResultFile


def on_disk(tmp_path: Path, data: bytes) -> ResultFile:
    path = tmp_path / "out.png"
    path.write_bytes(data)
    return ResultFile("out.png", len(data), path=path)


async def sent(response: Any, method: str = "GET") -> tuple[dict[str, str], bytes]:
    """What the response sends over ASGI: its headers and its body."""
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {"type": "http", "method": method, "asgi": {"spec_version": "2.4"}}
    await response(scope, receive, send)
    headers = {k.decode(): v.decode() for k, v in messages[0]["headers"]}
    return headers, b"".join(m.get("body", b"") for m in messages[1:])


@pytest.mark.parametrize("where", ["memory", "disk"])
@pytest.mark.parametrize(
    ("header", "status", "body", "content_range"),
    [
        (None, 200, b"0123456789", None),
        ("bytes=2-5", 206, b"2345", "bytes 2-5/10"),
        ("bytes=7-", 206, b"789", "bytes 7-9/10"),
        ("bytes=-3", 206, b"789", "bytes 7-9/10"),
        ("bytes=8-100", 206, b"89", "bytes 8-9/10"),
        ("bytes=10-", 416, b"", "bytes */10"),
        ("bytes=5-2", 416, b"", "bytes */10"),
        ("bytes=0-1,4-5", 200, b"0123456789", None),  # several ranges: the whole file
        ("items=1-2", 200, b"0123456789", None),
    ],
)
async def test_byte_ranges(
    tmp_path: Path, where: str, header: str | None, status: int, body: bytes, content_range: Any
) -> None:
    data = b"0123456789"
    file = ResultFile.of_bytes("out.png", data) if where == "memory" else on_disk(tmp_path, data)
    answer = ranged(file, header)
    headers, got = await sent(answer)
    assert answer.status_code == status and got == body
    assert headers.get("content-range") == content_range
    assert headers["accept-ranges"] == "bytes"
    if status != 416:
        assert headers["content-length"] == str(len(body))
        assert headers["content-type"] == "image/png"


@pytest.mark.parametrize("where", ["memory", "disk"])
async def test_a_range_of_a_large_file_crosses_its_pieces(tmp_path: Path, where: str) -> None:
    data = os.urandom(3 * CHUNK_BYTES + 5)
    file = ResultFile.of_bytes("out.png", data) if where == "memory" else on_disk(tmp_path, data)
    start, end = CHUNK_BYTES - 7, 2 * CHUNK_BYTES + 11  # over 1 MiB: read in a worker thread
    headers, got = await sent(ranged(file, f"bytes={start}-{end}"))
    assert got == data[start : end + 1]
    assert headers["content-length"] == str(end - start + 1)
    assert (await sent(ranged(file, None)))[1] == data


async def test_head_sends_the_length_and_reads_nothing(tmp_path: Path) -> None:
    file = on_disk(tmp_path, b"0123456789")
    response = FileBody(file, {"X-Extra": "1"})
    file.path.unlink()  # type: ignore[union-attr]  # a read would now fail
    headers, got = await sent(response, "HEAD")
    assert got == b"" and headers["content-length"] == "10" and headers["x-extra"] == "1"
