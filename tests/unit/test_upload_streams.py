"""Uploads stream a file from where it lies: to S3 (moto's real server) in one PUT when small and
in parts when large, a failed or cancelled multipart upload aborted; over HTTP as one PUT with
its Content-Length, never chunked. (Azure's blocks: tests/unit/test_azure_blob.py.)"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from app.core.addresses import AddressPolicy
from app.core.errors import UploadFailed
from app.core.options import HttpUpload, S3Upload
from app.core.outcome import CHUNK_BYTES, ResultFile
from app.core.settings import load_settings
from app.jobs.upload_s3 import PART_BYTES
from app.jobs.uploads import Uploader
from tests.integration.harness import eventually
from tests.integration.receiver import Receiver
from tests.s3_server import S3Server, s3_server


@dataclass(frozen=True, eq=False)
class GatedFile(ResultFile):
    """A file whose second piece is read only once `gate` opens; `asked` is set when it is
    wanted. With `fails`, that read fails as a disk would (OSError)."""

    gate: threading.Event = field(default_factory=threading.Event)
    asked: threading.Event = field(default_factory=threading.Event)
    fails: bool = False

    def iter_chunks(self, size: int = CHUNK_BYTES) -> Iterator[bytes]:
        pieces = super().iter_chunks(size)
        yield next(pieces)
        self.asked.set()
        self.gate.wait(30)
        if self.fails:
            raise OSError("a read error")
        yield from pieces


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server("renders") as server:
        yield server


@pytest.fixture
def uploader(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> Uploader:
    """An uploader whose S3 is moto's; each test closes it."""
    for name, value in s3.env.items():  # how the operator points the gateway at its store
        monkeypatch.setenv(name, value)
    return Uploader(AddressPolicy.from_settings(load_settings()), timeout_s=30.0)


def noise(tmp_path: Path, size: int, name: str = "big.png") -> ResultFile:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return ResultFile(name, size, "9", path=path)


def open_uploads(s3: S3Server) -> list[Any]:
    uploads: list[Any] = s3.client().list_multipart_uploads(Bucket="renders").get("Uploads", [])
    return uploads


@pytest.mark.parametrize(
    ("size", "parts"),
    [(PART_BYTES * 2 + 12345, 3), (PART_BYTES, 0), (3 * 2**20, 0), (0, 0)],
)
async def test_s3_gets_a_large_file_in_parts_and_a_small_one_in_one_put(
    s3: S3Server, uploader: Uploader, tmp_path: Path, size: int, parts: int
) -> None:
    file = noise(tmp_path, size)
    events: list[dict[str, Any]] = []
    uploader.on_event = lambda name, data: events.append({"event": name, **data})
    try:
        where = await uploader.store(S3Upload(bucket="renders", prefix=f"{size}/"), file)
    finally:
        await uploader.aclose()
    assert where == f"s3://renders/{size}/big.png"
    stored = s3.client().get_object(Bucket="renders", Key=f"{size}/big.png")
    assert stored["Body"].read() == file.read()
    assert stored["ContentType"] == "image/png"
    etag = stored["ETag"].strip('"')
    assert etag.endswith(f"-{parts}") if parts else "-" not in etag  # S3's mark of a multipart
    assert open_uploads(s3) == []
    assert [(e["event"], e["size"], e["local_path"]) for e in events] == [
        ("file_uploaded", size, "big.png")
    ]


async def test_a_multipart_upload_whose_read_fails_is_aborted(
    s3: S3Server, uploader: Uploader, tmp_path: Path
) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(os.urandom(PART_BYTES * 2))
    file = GatedFile("broken.png", PART_BYTES * 2, path=path, fails=True)
    file.gate.set()
    try:
        with pytest.raises(UploadFailed) as caught:
            await uploader.store(S3Upload(bucket="renders"), file)
    finally:
        await uploader.aclose()
    assert caught.value.details["filename"] == "broken.png"
    assert "s3://renders/broken.png" in caught.value.message
    assert open_uploads(s3) == []  # its first part was stored, and is gone with the upload
    assert "Contents" not in s3.client().list_objects_v2(Bucket="renders", Prefix="broken")


async def test_a_cancelled_multipart_upload_is_aborted_once_its_part_is_sent(
    s3: S3Server, uploader: Uploader, tmp_path: Path
) -> None:
    """The job's task is cancelled while the upload's thread reads the second part: the thread
    notices before sending it, and aborts the upload."""
    path = tmp_path / "cancelled.png"
    path.write_bytes(os.urandom(PART_BYTES * 2))
    file = GatedFile("cancelled.png", PART_BYTES * 2, path=path)
    task = asyncio.create_task(uploader.store(S3Upload(bucket="renders"), file))
    try:
        await asyncio.to_thread(file.asked.wait, 30)
        [upload] = open_uploads(s3)
        assert upload["Key"] == "cancelled.png"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        file.gate.set()
        await asyncio.to_thread(eventually, lambda: open_uploads(s3) == [], what="the abort")
    finally:
        file.gate.set()
        await uploader.aclose()
    assert "Contents" not in s3.client().list_objects_v2(Bucket="renders", Prefix="cancelled")


async def test_an_http_upload_streams_with_its_content_length(tmp_path: Path) -> None:
    receiver = Receiver()
    file = noise(tmp_path, 3 * 2**20 + 7)
    store = Uploader(
        AddressPolicy.from_settings(load_settings(allowed_private_networks="127.0.0.1/32")),
        timeout_s=30.0,
    )
    try:
        url = await store.store(HttpUpload(url_prefix=receiver.url("/out/")), file)
    finally:
        await store.aclose()
        receiver.close()
    assert url == receiver.url("/out/big.png")
    [put] = receiver.deliveries("/out/big.png")
    headers = {name.lower(): value for name, value in put.headers.items()}
    assert headers["content-length"] == str(file.size)
    assert "transfer-encoding" not in headers
    assert put.body == file.read()
