"""Every outbound wait of a job has an end, however slowly the other side trickles: a webhook
attempt (a job's, and the system webhook's), an output PUT, a model download. Each gives up at
its total deadline, retries as configured, says so, and lets go of its connection; against a
real loopback peer that answers, or reads, a byte at a time (tests.trickle)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.addresses import AddressPolicy
from app.core.errors import DownloadFailed, UploadFailed
from app.core.options import HttpUpload, S3Upload
from app.core.outcome import ResultFile
from app.core.settings import load_settings
from app.jobs.uploads import Uploader
from app.jobs.webhooks import SystemEvents, WebhookSender
from app.models.credentials import Credentials
from app.models.fetch import Fetcher
from app.models.transfer import Transfer
from tests.trickle import Trickle, held

DEADLINE_S = 0.5


class Paced:
    """A loopback store that reads each PUT's body at about 6 MiB/s (64 KiB every 10 ms), then
    answers 201; `bodies` holds what it read, by path."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.bodies: dict[str, bytes] = {}
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while True:
            try:
                peer, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(peer,), daemon=True).start()

    def _serve(self, peer: socket.socket) -> None:
        with peer, contextlib.suppress(OSError):
            head = b""
            while b"\r\n\r\n" not in head:
                head += peer.recv(1)
            lines = head.decode().split("\r\n")
            path = lines[0].split(" ")[1]
            length = next(int(v) for k, _, v in (x.partition(":") for x in lines[1:])
                          if k.lower() == "content-length")  # fmt: skip
            body = b""
            while len(body) < length:
                piece = peer.recv(min(65536, length - len(body)))
                if not piece:
                    return  # given up by the uploader
                body += piece
                time.sleep(0.01)
            self.bodies[path] = body
            peer.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def answers() -> Iterator[Trickle]:
    peer = Trickle("answers")
    yield peer
    peer.close()


@pytest.fixture
def reads() -> Iterator[Trickle]:
    peer = Trickle("reads")
    yield peer
    peer.close()


def sender(attempts: int = 2) -> WebhookSender:
    settings = load_settings(
        allow_private_urls=True,
        webhook_timeout_s=DEADLINE_S,
        prompt_webhook_retries=attempts,
        webhook_backoff_s=0,
    )
    return WebhookSender(settings)


async def let_go(peer: Trickle) -> None:
    """No connection to the peer is held any more: each was given up at its deadline."""
    deadline = time.monotonic() + 5
    while held(peer.port):
        assert time.monotonic() < deadline, "a connection to the slow peer is still held"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("peer", ["answers", "reads"])
async def test_a_webhook_that_trickles_is_cut_off_at_each_attempts_deadline(
    peer: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    slow: Trickle = request.getfixturevalue(peer)
    hooks = sender(attempts=2)
    payload = {"type": "prompt.complete", "images": ["x" * (8 << 20 if peer == "reads" else 10)]}
    began = time.monotonic()
    try:
        delivered = await asyncio.wait_for(
            hooks.deliver(slow.url("/hook"), payload, msg_id="m1", job_id="job-1"), 30
        )
    finally:
        await hooks.aclose()
    assert not delivered
    assert time.monotonic() - began >= 2 * DEADLINE_S  # both attempts ran to their deadline
    assert len(slow.connections) == 2  # PROMPT_WEBHOOK_RETRIES attempts
    await let_go(slow)
    assert "could not deliver prompt.complete" in caplog.text
    assert "after 2 attempt(s): no answer within WEBHOOK_TIMEOUT_S (0.5s)" in caplog.text


async def test_the_system_webhook_moves_on_from_a_receiver_that_trickles(answers: Trickle) -> None:
    hooks = sender(attempts=1)
    events = SystemEvents(hooks, answers.url("/system"), frozenset({"status"}), {})
    events.start()
    try:
        for n in range(2):
            events.offer("status", {"n": n}, request_id=None)
        await asyncio.wait_for(events.queue.join(), 20)  # both went, each cut off in time
    finally:
        await events.close(1)
        await hooks.aclose()
    assert len(answers.connections) == 2
    await let_go(answers)


@pytest.mark.parametrize("peer", ["answers", "reads"])
async def test_an_output_put_that_trickles_fails_the_upload_at_its_deadline(
    peer: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    slow: Trickle = request.getfixturevalue(peer)
    addresses = AddressPolicy.from_settings(load_settings(allow_private_urls=True))
    # 8 MiB at 64 MiB/s: its deadline is 0.5 + 0.125 s.
    uploader = Uploader(addresses, timeout_s=DEADLINE_S, min_mb_per_s=64)
    target = HttpUpload(url_prefix=slow.url("/out/"))
    try:
        with pytest.raises(UploadFailed) as failed:
            await asyncio.wait_for(
                uploader.store(target, ResultFile.of_bytes("a.png", b"x" * (8 << 20))), 30
            )
    finally:
        await uploader.aclose()
    assert failed.value.details == {"filename": "a.png"}  # a private store's answer: the log's
    assert "UPLOAD_TIMEOUT_S (0.5s) plus 0.1s for its 8.0 MB at UPLOAD_MIN_MB_PER_S (64)" in (
        caplog.text
    )
    await let_go(slow)


@pytest.fixture
def paced() -> Iterator[Paced]:
    store = Paced()
    yield store
    store.close()


async def test_a_large_output_has_its_size_at_the_least_rate_on_top_of_the_deadline(
    paced: Paced,
) -> None:
    # 4 MiB read at about 6 MiB/s takes about 0.65 s, past UPLOAD_TIMEOUT_S (0.3 s) but well
    # within 0.3 s plus 4 MiB at 1 MiB/s (4.3 s): it is stored. At 64 MiB/s it had 0.36 s.
    addresses = AddressPolicy.from_settings(load_settings(allow_private_urls=True))
    data = os.urandom(4 << 20)
    for rate, stored in ((1.0, True), (64.0, False)):
        uploader = Uploader(addresses, timeout_s=0.3, min_mb_per_s=rate)
        target = HttpUpload(url_prefix=paced.url(f"/out/{rate:g}/"))
        began = time.monotonic()
        try:
            if stored:
                file = ResultFile.of_bytes("v.mp4", data)
                await asyncio.wait_for(uploader.store(target, file), 30)
                assert time.monotonic() - began > 0.3  # it did take longer than the deadline alone
            else:
                with pytest.raises(UploadFailed):
                    await asyncio.wait_for(
                        uploader.store(target, ResultFile.of_bytes("v.mp4", data)), 30
                    )
        finally:
            await uploader.aclose()
    assert paced.bodies == {"/out/1/v.mp4": data}  # the one stored arrived whole


async def test_an_s3_upload_that_trickles_fails_at_its_deadline(answers: Trickle) -> None:
    # Real boto3 against a loopback peer that answers a byte at a time: boto's own read timeout
    # never fires (never silent for 60 s), the upload's deadline does.
    import boto3  # type: ignore[import-untyped]
    from botocore.config import Config  # type: ignore[import-untyped]

    settings = load_settings(allow_private_urls=True)
    uploader = Uploader(AddressPolicy.from_settings(settings), timeout_s=DEADLINE_S)
    uploader._s3 = boto3.client(
        "s3", endpoint_url=answers.url(""), region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
        config=Config(retries={"max_attempts": 1}),
    )  # fmt: skip
    began = time.monotonic()
    try:
        with pytest.raises(UploadFailed) as failed:
            await asyncio.wait_for(
                uploader.store(S3Upload(bucket="out"), ResultFile.of_bytes("a.png", b"x")), 30
            )
    finally:
        await uploader.aclose()
        answers.close()  # boto's thread, still reading, ends with it (the loop waits for it)
    assert time.monotonic() - began < 5
    assert failed.value.details == {"filename": "a.png", "store_error": "timeout"}
    assert "UPLOAD_TIMEOUT_S (0.5s)" in failed.value.message


async def test_a_model_download_that_trickles_fails_at_model_download_max_s(
    answers: Trickle, tmp_path: Path
) -> None:
    addresses = AddressPolicy.from_settings(load_settings(allow_private_urls=True))
    # Never silent for its 5 s stall limit; cut off by its total deadline instead.
    fetcher = Fetcher(addresses, timeout_s=5, retries=3, max_s=1.0)
    transfer = Transfer(
        answers.url("/m.safetensors"), "url", Credentials([]), False, lambda _: None, lambda _: None
    )
    try:
        with pytest.raises(DownloadFailed) as failed:
            await asyncio.wait_for(fetcher.fetch(transfer, tmp_path / "m.part"), 30)
    finally:
        await fetcher.aclose()
    assert failed.value.location == "url"
    assert len(answers.connections) == 1  # never broken off and resumed: it never went quiet
    await let_go(answers)
