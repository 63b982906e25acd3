"""Every outbound wait of a job has an end, however slowly the other side trickles: a webhook
attempt (a job's, and the system webhook's), an output PUT, a model download. Each gives up at
its total deadline, retries as configured, says so, and lets go of its connection; against a
real loopback peer that answers, or reads, a byte at a time (tests.trickle)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.addresses import AddressPolicy
from app.core.errors import DownloadFailed, UploadFailed
from app.core.options import HttpUpload
from app.core.outcome import ResultFile
from app.core.settings import load_settings
from app.jobs.uploads import Uploader
from app.jobs.webhooks import SystemEvents, WebhookSender
from app.models.credentials import Credentials
from app.models.fetch import Fetcher
from app.models.transfer import Transfer
from tests.trickle import Trickle, held

DEADLINE_S = 0.5


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
    uploader = Uploader(addresses, timeout_s=DEADLINE_S)
    target = HttpUpload(url_prefix=slow.url("/out/"))
    try:
        with pytest.raises(UploadFailed) as failed:
            await asyncio.wait_for(
                uploader.store(target, ResultFile.of_bytes("a.png", b"x" * (8 << 20))), 30
            )
    finally:
        await uploader.aclose()
    assert failed.value.details == {"filename": "a.png"}  # a private store's answer: the log's
    assert "UPLOAD_TIMEOUT_S (0.5s)" in caplog.text
    await let_go(slow)


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
