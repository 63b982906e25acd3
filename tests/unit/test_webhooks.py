"""Webhook signing matches the Standard Webhooks library; the system-event buffer is bounded;
a job's webhook goes only to an address the policy allows, pinned, and never follows a redirect.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from app.core.errors import PromptTimeout
from app.core.outcome import JobOutcome, ResultFile
from app.core.settings import SettingsError, load_settings
from app.core.streamed_json import StreamedJson
from app.jobs.webhooks import SystemEvents, WebhookSender, decode_secret, deliver_job_end
from tests.integration.receiver import Receiver, loopback_traps
from tests.unit.fakedns import FakeDNS

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


async def test_signature_verifies_with_the_standard_library() -> None:
    sender = WebhookSender(load_settings(webhook_secret=SECRET))
    payload = {"type": "prompt.complete", "id": "j1"}
    body = StreamedJson.of(payload, javascript=True)
    headers = await sender.headers("j1", body)
    assert headers["webhook-id"] == "j1" and headers["content-length"] == str(len(body.whole()))
    assert Webhook(SECRET).verify(body.whole(), headers) == payload
    tampered = body.whole().replace(b"j1", b"j2")
    with pytest.raises(Exception, match="signature"):
        Webhook(SECRET).verify(tampered, headers)


async def test_a_body_with_files_is_signed_in_a_first_pass_over_the_bytes_it_sends(
    tmp_path: Path,
) -> None:
    """Over 3 MiB of incompressible bytes from disk: read in pieces twice, the same bytes."""
    data = os.urandom((3 << 20) + 5)
    (tmp_path / "v.mp4").write_bytes(data)
    files = [
        ResultFile("v.mp4", len(data), path=tmp_path / "v.mp4"),
        ResultFile.of_bytes("a", b"x"),
    ]
    payload = {"type": "prompt.complete", "images": files, "filenames": ["v.mp4", "a"]}
    sender = WebhookSender(load_settings(webhook_secret=SECRET))
    body = StreamedJson.of(payload, javascript=True)
    headers = await sender.headers("j1", body)
    sent = b"".join([piece async for piece in body.chunks()])
    assert int(headers["content-length"]) == len(sent) == body.size
    verified = Webhook(SECRET).verify(sent, headers)
    assert base64.b64decode(verified["images"][0]) == data
    assert verified["images"][1] == "eA=="


async def test_without_a_secret_nothing_is_signed() -> None:
    sender = WebhookSender(load_settings(webhook_secret=None))
    assert "webhook-signature" not in await sender.headers("j1", StreamedJson.of({}))


@pytest.mark.parametrize("secret", [SECRET, SECRET.removeprefix("whsec_"), SECRET.rstrip("=")])
def test_secret_forms(secret: str) -> None:
    assert decode_secret(secret) == b"0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"webhook_secret": "not base64!"}, "WEBHOOK_SECRET"),
        ({"system_webhook_events": "progress,bogus"}, "bogus"),
        ({"system_webhook_url": "not a url"}, "SYSTEM_WEBHOOK_URL"),
    ],
)
def test_bad_webhook_settings_stop_start_up(env: dict[str, str], words: str) -> None:
    with pytest.raises(SettingsError, match=words):
        load_settings(**env)


def test_all_means_every_event_type() -> None:
    assert "execution_success" in load_settings(system_webhook_events="all").system_webhook_events


async def test_system_event_buffer_drops_the_oldest_and_counts_them() -> None:
    sender = WebhookSender(load_settings())
    events = SystemEvents(sender, "http://127.0.0.1:9/x", frozenset({"progress"}), {"pod": "p1"},
                          buffer=10)  # fmt: skip
    for value in range(15):  # no worker started: a receiver that never keeps up
        events.offer("progress", {"value": value, "prompt_id": "p"}, request_id="job-1")
    events.offer("status", {}, request_id=None)  # not a listed type: ignored
    assert events.dropped == 5
    queued = [events.queue.get_nowait()["payload"] for _ in range(events.queue.qsize())]
    assert [p["data"]["value"] for p in queued] == list(range(5, 15))  # newest, in order
    assert all(p["data"]["prompt_id"] == "job-1" for p in queued)
    inner = {"value": 5, "prompt_id": "job-1"}  # ours at data, comfyui-api's at data.data
    assert queued[0] == {"event": "comfy.progress", "data": {**inner, "type": "progress",
                         "data": inner}, "metadata": {"pod": "p1"}}  # fmt: skip
    await sender.aclose()


async def test_a_keyed_jobs_system_events_name_its_key() -> None:
    sender = WebhookSender(load_settings())
    events = SystemEvents(sender, "http://127.0.0.1:9/x", frozenset({"progress"}), {"pod": "p1"})
    events.offer("progress", {"value": 1, "prompt_id": "p"}, request_id="job-1", key_name="acme")
    events.offer("progress", {"value": 2, "prompt_id": "q"}, request_id=None)  # no job's
    first, second = (events.queue.get_nowait()["payload"] for _ in range(2))
    assert first["metadata"] == {"pod": "p1", "key_name": "acme"}
    assert second["metadata"] == {"pod": "p1"}
    assert events.meta == {"pod": "p1"}  # the operator's metadata is not changed
    await sender.aclose()


async def test_a_keyed_jobs_webhooks_name_its_key() -> None:
    receiver = Receiver()
    sender = WebhookSender(load_settings(allow_private_urls=True))
    result = JobOutcome("job-1", {}, (ResultFile.of_bytes("a.png", b"hi"),))
    try:
        failure = JobOutcome.failed("job-1", {}, PromptTimeout("no"))
        for outcome in (result, failure):
            await deliver_job_end(
                sender, webhook=receiver.url("/legacy"), webhook_v2=receiver.url("/v2"),
                graph={}, key_name="acme", outcome=outcome,
            )  # fmt: skip
        await deliver_job_end(sender, webhook=None, webhook_v2=receiver.url("/anon"),
                              graph={}, outcome=JobOutcome("job-2", {}))  # fmt: skip
    finally:
        await sender.aclose()
        receiver.close()
    named = receiver.deliveries("/legacy") + receiver.deliveries("/v2")
    assert [d.json()["metadata"] for d in named] == [{"key_name": "acme"}] * 4
    assert "metadata" not in receiver.deliveries("/anon")[0].json()  # API keys off: as before


# --- where a job's webhook may go ----------------------------------------------------------------


@pytest.fixture
def traps() -> Iterator[list[Receiver]]:
    made = loopback_traps()
    yield made
    for receiver in made:
        receiver.close()


def sender_for(networks: str = "", dns: FakeDNS | None = None) -> WebhookSender:
    settings = load_settings(
        allowed_private_networks=networks, prompt_webhook_retries=3, webhook_backoff_s=0
    )
    sender = WebhookSender(settings)
    if dns is not None:
        sender.addresses.resolver = dns
    return sender


async def test_a_refused_address_gets_nothing_and_no_retries(
    traps: list[Receiver], caplog: pytest.LogCaptureFixture
) -> None:
    dns = FakeDNS({"hooks.test": [["127.0.0.1"]]})
    sender = sender_for(dns=dns)
    try:
        url = f"http://hooks.test:{traps[0].port}/x"
        assert not await sender.deliver(url, {"type": "t"}, msg_id="m", job_id="job-1")
    finally:
        await sender.aclose()
    assert [t.connections for t in traps] == [0, 0, 0]
    assert dns.asked == ["hooks.test"]  # final: a refused address is not tried again
    assert "job job-1: could not deliver t" in caplog.text
    assert "hooks.test (127.0.0.1)" in caplog.text


async def test_dns_rebinding_after_the_check_sends_nothing(traps: list[Receiver]) -> None:
    """The request's check saw an allowed address; by delivery the name points at another."""
    dns = FakeDNS({"rebind.test": [["127.0.0.2"], ["127.0.0.1"]]})
    sender = sender_for("127.0.0.2/32", dns)
    url = f"http://rebind.test:{traps[0].port}/x"
    try:
        await sender.addresses.check(url)  # what the request saw: allowed
        assert not await sender.deliver(url, {"type": "t"}, msg_id="m", job_id="job-2")
    finally:
        await sender.aclose()
    assert [t.connections for t in traps] == [0, 0, 0]


async def test_delivery_connects_to_the_checked_address_with_the_name_in_host(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    receiver = Receiver(host="127.0.0.2")
    # httpx could not resolve hooks.test itself: delivered means delivered to the pinned address
    sender = sender_for("127.0.0.2/32", FakeDNS({"hooks.test": [["127.0.0.2"]]}))
    try:
        url = f"http://hooks.test:{receiver.port}/in"
        assert await sender.deliver(url, {"type": "t"}, msg_id="m", job_id="job-3")
    finally:
        await sender.aclose()
        receiver.close()
    [delivery] = receiver.deliveries("/in")
    assert delivery.headers["Host"] == f"hooks.test:{receiver.port}"
    assert delivery.json() == {"type": "t"}
    assert f"delivered t to {url}" in caplog.text  # the log names the URL the client gave


async def test_a_name_that_does_not_resolve_is_retried() -> None:
    dns = FakeDNS({})
    sender = sender_for(dns=dns)
    try:
        assert not await sender.deliver("http://gone.test/x", {}, msg_id="m", job_id="job-4")
    finally:
        await sender.aclose()
    assert dns.asked == ["gone.test"] * 3  # DNS may answer on a later attempt


async def test_a_redirect_is_not_followed(traps: list[Receiver]) -> None:
    hop = Receiver()
    hop.redirects["/hop"] = traps[1].url("/landed")  # 127.0.0.2, allowed too
    sender = sender_for("127.0.0.0/8")
    try:
        assert not await sender.deliver(hop.url("/hop"), {}, msg_id="m", job_id="job-5")
    finally:
        await sender.aclose()
        hop.close()
    assert len(hop.deliveries("/hop")) == 1  # a redirect is final, like any other 3xx/4xx
    assert traps[1].connections == 0


async def test_the_operators_system_webhook_url_is_not_checked() -> None:
    receiver = Receiver()  # 127.0.0.1: refused for a client, and no setting allows it
    sender = WebhookSender(load_settings())
    events = SystemEvents(sender, receiver.url("/system"), frozenset({"status"}), {})
    events.start()
    try:
        events.offer("status", {"queue": 0}, request_id=None)
        await events.close(timeout_s=10)
    finally:
        await sender.aclose()
        receiver.close()
    [delivery] = receiver.deliveries("/system")
    assert delivery.json()["event"] == "comfy.status"
