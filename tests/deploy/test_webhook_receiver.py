"""The example webhook receiver of docker-compose.yml, fed by the gateway's own WebhookSender."""

from __future__ import annotations

import base64
import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from app.core.settings import PROJECT_ROOT, load_settings
from app.jobs.webhooks import WebhookSender, decode_secret, sign

RECEIVER = PROJECT_ROOT / "docker" / "webhook-receiver" / "receiver.py"
SECRET = "whsec_" + base64.b64encode(b"example receiver secret, 32 by.").decode()
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nnot really").decode()


@pytest.fixture(scope="module")
def receiver_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_receiver", RECEIVER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def headers_for(
    body: bytes, *, msg_id: str = "job-1", timestamp: int | None = None
) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    signature = sign(decode_secret(SECRET), msg_id, ts, body)
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}


@pytest.mark.parametrize(
    ("change", "valid"),
    [
        (None, True),
        ("body", False),
        ("id", False),
        ("old", False),
        ("future", False),
        ("second-signature", True),
        ("v2-prefix", False),
        ("garbage", False),
    ],
)
def test_verify_matches_the_gateways_signature(
    receiver_module: ModuleType, change: str | None, valid: bool
) -> None:
    body = b'{"type":"prompt.complete","id":"job-1"}'
    now = time.time()
    headers = headers_for(body)
    if change == "body":
        body = body.replace(b"job-1", b"job-2")
    elif change == "id":
        headers["webhook-id"] = "job-2"
    elif change in ("old", "future"):
        ts = int(now) + (-600 if change == "old" else 600)
        headers = headers_for(body, timestamp=ts)
    elif change == "second-signature":
        headers["webhook-signature"] = "v1,AAAA " + headers["webhook-signature"]
    elif change == "v2-prefix":
        headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
    elif change == "garbage":
        headers["webhook-signature"] = "v1,!!!not base64!!!"
    key = receiver_module.decode_secret(SECRET)
    assert receiver_module.verify(key, headers, body, now=now) is valid


@pytest.mark.parametrize("name", ["../../etc/passwd", "/abs/path.png", ".hidden", "ok.png", ""])
def test_saved_names_stay_in_their_folder(
    receiver_module: ModuleType, tmp_path: Path, name: str
) -> None:
    payload = {"event": "output.complete", "id": "../job", "filename": name, "image": PNG}
    (path,) = receiver_module.save(tmp_path, payload)
    assert path.resolve().is_relative_to(tmp_path.resolve())
    assert path.read_bytes().startswith(b"\x89PNG")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def running_receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    out_dir = tmp_path_factory.mktemp("received")
    port = free_port()
    env = {**os.environ, "WEBHOOK_SECRET": SECRET, "OUT_DIR": str(out_dir), "PORT": str(port)}
    log = out_dir.parent / "receiver.log"
    with log.open("wb") as sink:  # the child keeps its own descriptor
        proc = subprocess.Popen([sys.executable, str(RECEIVER)], env=env, stderr=sink)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the receiver did not start"
            time.sleep(0.05)
        yield url, out_dir
    finally:
        proc.terminate()
        proc.wait(5)


async def test_receiver_takes_signed_deliveries_and_refuses_others(
    running_receiver: tuple[str, Path],
) -> None:
    url, out_dir = running_receiver
    loopback = {"prompt_webhook_retries": 1, "allowed_private_networks": "127.0.0.1/32"}
    signed = WebhookSender(load_settings(webhook_secret=SECRET, **loopback))
    unsigned = WebhookSender(load_settings(**loopback))
    complete = {"type": "prompt.complete", "id": "job-9", "images": [PNG, PNG],
                "filenames": ["a.png", "b.png"], "prompt": {}, "stats": {}}  # fmt: skip
    try:
        assert await signed.deliver(url + "/", complete, msg_id="job-9", job_id="job-9")
        assert not await unsigned.deliver(url + "/", complete, msg_id="job-8", job_id="job-8")
    finally:
        await signed.aclose()
        await unsigned.aclose()
    assert sorted(p.name for p in (out_dir / "job-9").iterdir()) == ["a.png", "b.png"]
    assert not (out_dir / "job-8").exists()
