"""Webhook signing matches the Standard Webhooks library; the system-event buffer is bounded."""

from __future__ import annotations

import base64
import json

import pytest
from standardwebhooks import Webhook

from app.settings import SettingsError, load_settings
from app.webhooks import SystemEvents, WebhookSender, decode_secret

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def test_signature_verifies_with_the_standard_library() -> None:
    sender = WebhookSender(load_settings(webhook_secret=SECRET))
    body = json.dumps({"type": "prompt.complete", "id": "j1"}).encode()
    headers = sender.headers("j1", body)
    assert headers["webhook-id"] == "j1"
    assert Webhook(SECRET).verify(body, headers) == {"type": "prompt.complete", "id": "j1"}
    tampered = body.replace(b"j1", b"j2")
    with pytest.raises(Exception, match="signature"):
        Webhook(SECRET).verify(tampered, headers)


def test_without_a_secret_nothing_is_signed() -> None:
    sender = WebhookSender(load_settings(webhook_secret=None))
    assert "webhook-signature" not in sender.headers("j1", b"{}")


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
    assert queued[0] == {"event": "comfy.progress", "data": {"value": 5, "prompt_id": "job-1"},
                         "metadata": {"pod": "p1"}}  # fmt: skip
    await sender.aclose()
