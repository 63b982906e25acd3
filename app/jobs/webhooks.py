"""Webhooks: Standard Webhooks signing, delivery with retries, job and system-event payloads.

A delivery is retried on connection errors, timeouts, 429 and 5xx, with exponential back-off
and jitter, up to PROMPT_WEBHOOK_RETRIES attempts; other 4xx answers are final. Deliveries run
in their job's task (or the system-event worker), never in a request handler. Each attempt has
a total deadline, WEBHOOK_TIMEOUT_S, for everything from resolving the name to the answer's
status line: a receiver that reads the body or answers a byte at a time cannot hold a delivery
(and the job's outputs with it). The answer's body is never read.

A job's webhook URL came from a client: each attempt resolves it again and connects to the
address app.core.addresses allows (a name that now points somewhere refused gets nothing), and
redirects are never followed. SYSTEM_WEBHOOK_URL is the operator's and is used as it is.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import random
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from app.core.addresses import AddressPolicy, AddressRefused, HostUnresolved
from app.core.metrics import MetricsHooks
from app.core.numbers import finite_number
from app.core.outcome import JobOutcome
from app.core.settings import Settings
from app.core.streamed_json import StreamedJson
from app.core.system_events import comfy_event_data, event_name

log = logging.getLogger(__name__)


def decode_secret(secret: str) -> bytes:
    """A Standard Webhooks secret: base64 (padding optional), optionally prefixed `whsec_`."""
    raw = secret.removeprefix("whsec_")
    key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    if not key:
        raise ValueError("the secret is empty")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: `v1,` + base64 HMAC-SHA256 of `id.timestamp.body`."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


async def sign_streamed(key: bytes, msg_id: str, timestamp: int, body: StreamedJson) -> str:
    """sign() of a body with files in it, in a first pass over the body: the send is a second
    pass over the same bytes, and no file is ever whole in memory."""
    digest = await body.hmac_sha256(key, f"{msg_id}.{timestamp}.".encode())
    return "v1," + base64.b64encode(digest).decode()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class WebhookSender:
    """POSTs JSON to receivers: signed when WEBHOOK_SECRET is set, retried when it is worth it."""

    def __init__(self, settings: Settings, *, routine: bool = False) -> None:
        # Routine deliveries (progress) log success at DEBUG and failure as a warning.
        self.ok_level = logging.DEBUG if routine else logging.INFO
        self.failed_level = logging.WARNING if routine else logging.ERROR
        self.attempts = settings.prompt_webhook_retries
        self.timeout_s = settings.webhook_timeout_s
        self.base_backoff_s = settings.webhook_backoff_s
        self.key = decode_secret(settings.webhook_secret) if settings.webhook_secret else None
        # Never follow a redirect: its target would escape the address check.
        self.http = httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False)
        self.addresses = AddressPolicy.from_settings(settings)
        self.metrics = MetricsHooks()  # the Gateway hands in its GatewayMetrics

    async def aclose(self) -> None:
        await self.http.aclose()

    async def headers(self, msg_id: str, body: StreamedJson) -> dict[str, str]:
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "content-length": str(body.size),
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
        }
        if self.key is not None:
            headers["webhook-signature"] = await sign_streamed(self.key, msg_id, timestamp, body)
        return headers

    async def _request(
        self, url: str, body: StreamedJson, msg_id: str, trusted: bool
    ) -> httpx.Request:
        """One attempt's POST, to the address just checked unless the operator set url."""
        headers = await self.headers(msg_id, body)  # per attempt: it signs a fresh time
        content = body.whole() if len(body.parts) == 1 else body.chunks()
        if trusted:
            return self.http.build_request("POST", url, content=content, headers=headers)
        pinned = await self.addresses.pin(url)
        headers.update(pinned.headers)
        return self.http.build_request(
            "POST", pinned.url, content=content, headers=headers, extensions=pinned.extensions
        )

    async def deliver(
        self,
        url: str,
        payload: dict[str, Any],
        *,
        msg_id: str,
        job_id: str,
        trusted: bool = False,
    ) -> bool:
        """POST payload to url until it is accepted or the attempts run out; True if accepted.

        A ResultFile in payload is written as its base64, streamed (app.core.streamed_json);
        the body is JSON.stringify's bytes, so a Node receiver's check of its signature holds.
        `trusted`: the operator set url (SYSTEM_WEBHOOK_URL), so its address is not checked.
        """
        body = StreamedJson.of(payload, javascript=True)
        what = payload.get("type") or payload.get("event")
        last_error = "no attempt made"
        for attempt in range(1, self.attempts + 1):
            retry_after: float | None = None
            try:
                async with asyncio.timeout(self.timeout_s):
                    request = await self._request(url, body, msg_id, trusted)
                    response = await self.http.send(request, stream=True)
                    await response.aclose()  # its body is not wanted: nothing more is read
            except TimeoutError:
                last_error = f"no answer within WEBHOOK_TIMEOUT_S ({self.timeout_s:g}s)"
            except HostUnresolved as e:
                last_error = str(e)  # DNS may answer on the next attempt
            except AddressRefused as e:
                last_error = str(e)
                break  # nothing was sent, and nothing will be
            except httpx.TransportError as e:
                last_error = f"{type(e).__name__}: {e}"
            else:
                if response.status_code < 300:
                    log.log(self.ok_level, "job %s: delivered %s to %s (attempt %d)",
                            job_id, what, url, attempt)  # fmt: skip
                    self.metrics.webhook_delivered(job_id, delivered=True)
                    return True
                last_error = f"HTTP {response.status_code}"
                if response.status_code != 429 and response.status_code < 500:
                    break  # the receiver refuses this payload; sending it again will not help
                retry_after = _retry_after(response)
            if attempt < self.attempts:
                backoff_s = self.base_backoff_s * 2 ** (attempt - 1)
                delay_s = retry_after if retry_after is not None else backoff_s
                await asyncio.sleep(min(delay_s, 60) * random.uniform(0.8, 1.2))
        log.log(
            self.failed_level, "job %s: could not deliver %s to %s after %d attempt(s): %s",
            job_id, what, url, attempt, last_error,
        )  # fmt: skip
        self.metrics.webhook_delivered(job_id, delivered=False)
        return False


def _retry_after(response: httpx.Response) -> float | None:
    # A receiver's `nan` would reach asyncio.sleep() and the event loop's timer heap.
    seconds = finite_number(response.headers.get("retry-after", ""))
    return None if seconds is None else max(seconds, 0.0)


class SystemEvents:
    """Forwards ComfyUI's events to SYSTEM_WEBHOOK_URL in order, through a bounded buffer."""

    def __init__(self, sender: WebhookSender, url: str, kinds: frozenset[str], meta: dict[str, str],
                 *, buffer: int = 1000) -> None:  # fmt: skip
        self.sender = sender
        self.url = url
        self.kinds = kinds
        self.meta = meta
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(buffer)
        self.dropped = 0
        self.sequence = 0
        self._task: asyncio.Task[None] | None = None

    def offer(
        self, kind: str, data: dict[str, Any], request_id: str | None, key_name: str | None = None
    ) -> None:
        """Queue one of ComfyUI's events, as `comfy.<kind>`.

        `key_name`: the name of the API key whose job it is, sent as `metadata.key_name`.
        """
        if kind in self.kinds:
            self._queue(f"comfy.{kind}", comfy_event_data(kind, data, request_id), key_name)

    def announce(self, event: str, data: dict[str, Any]) -> None:
        """Queue one of the gateway's own events (`model.downloaded`), named as it is."""
        if event in self.kinds:
            self._queue(event_name(event), data, None)

    def _queue(self, event: str, data: dict[str, Any], key_name: str | None) -> None:
        """Past the buffer the oldest event is dropped, so jobs never wait on the receiver."""
        self.sequence += 1
        meta = self.meta if key_name is None else {**self.meta, "key_name": key_name}
        payload = {"event": event, "data": data, "metadata": meta}
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.warning("system webhook receiver is slow: %d event(s) dropped", self.dropped)
        self.queue.put_nowait({"payload": payload, "id": str(uuid.uuid4())})

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="system-webhooks")

    async def _run(self) -> None:
        while True:
            item = await self.queue.get()
            await self.sender.deliver(
                self.url, item["payload"], msg_id=item["id"], job_id="system", trusted=True
            )
            self.queue.task_done()

    async def close(self, timeout_s: float) -> None:
        """Deliver what is queued, for at most timeout_s, then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), timeout_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def deliver_job_end(
    sender: WebhookSender,
    *,
    webhook: str | None,
    webhook_v2: str | None,
    graph: dict[str, Any],
    outcome: JobOutcome,
    key_name: str | None = None,
) -> None:
    """The terminal deliveries of one job: legacy per output (or one failure), and v2 once.

    `key_name`: the name of the API key whose job it is, sent as `metadata.key_name`.
    """
    meta = {"metadata": {"key_name": key_name}} if key_name is not None else {}
    job_id = outcome.id
    error = outcome.error.body() if outcome.error is not None else None
    if webhook:
        if error is None:
            warned = {"warnings": list(outcome.warnings)} if outcome.warnings else {}
            for index, file in enumerate(outcome.files):
                payload = {"event": "output.complete", "image": file, "id": job_id,
                           "filename": file.name, "prompt": graph, **warned, **meta}  # fmt: skip
                await sender.deliver(webhook, payload, msg_id=f"{job_id}.{index}", job_id=job_id)
        else:
            payload = {"event": "prompt.failed", **error, "id": job_id, "prompt": graph, **meta}
            await sender.deliver(webhook, payload, msg_id=job_id, job_id=job_id)
    if webhook_v2:
        if error is None:
            body = outcome.body()
            payload = {"type": "prompt.complete", "timestamp": now_iso(), **body, **meta}
        else:
            payload = {"type": "prompt.failed", "timestamp": now_iso(), "id": job_id,
                       "prompt": graph, **error, **meta}  # fmt: skip
        await sender.deliver(webhook_v2, payload, msg_id=job_id, job_id=job_id)
