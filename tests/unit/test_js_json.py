"""Webhook bodies a JavaScript receiver verifies: the bytes the gateway signs are the bytes
`JSON.stringify(JSON.parse(body))` gives back under Node, for every value a graph may hold."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.core.js_json import js_dumps, js_number
from app.core.settings import load_settings
from app.jobs.webhooks import WebhookSender

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
ODD: dict[str, Any] = {
    "10": "integer-like keys", "9": "come first, ascending", "b": 1, "01": "not an index",
    "4294967295": "past the last index", "4294967294": "the last index", "-1": "not an index",
    "floats": [9.0, -0.0, 0.1, 1 / 3, 1e-5, 1e-7, 1.5e-7, 1e16, 1e20, 1e21, 1.2345e21,
               123.456, 5e-324, 1.7976931348623157e308, 100.0, -2.5e-10],
    "ints": [0, -5, 2**53, 2**53 + 1, 2**64, -(2**63), 10**21],
    "text": "é ü 日本 😀 \u2028 \u2029 \x00 \x1f \x7f / \" \\ \n \t",
    "lone": "\ud800",
    "nested": [{"b": True, "2": {"1": None}}, [], {}],
}  # fmt: skip


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("node is not installed: the receiver test needs Node 20 or later")
    return found


def node_roundtrip(body: bytes) -> bytes:
    script = "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>" \
             "process.stdout.write(JSON.stringify(JSON.parse(s))))"  # fmt: skip
    return subprocess.run(
        [node(), "-e", script], input=body, capture_output=True, check=True
    ).stdout


def test_odd_values_survive_a_javascript_round_trip() -> None:
    body = js_dumps(ODD)
    assert node_roundtrip(body) == body
    assert body.startswith(b'{"9":"come first, ascending","10":')
    assert b'"floats":[9,0,0.1,' in body and b"0.00001" in body and b"1e+21" in body
    assert "日本 😀".encode() in body  # raw UTF-8, as JSON.stringify writes it


def test_random_floats_survive_a_javascript_round_trip() -> None:
    rng = random.Random(21)
    values = [rng.uniform(-1, 1) * 10 ** rng.randint(-40, 40) for _ in range(3000)]
    body = js_dumps(values)
    assert node_roundtrip(body) == body
    assert [float(v) for v in json.loads(body)] == values  # the same numbers, read back


@pytest.mark.parametrize(
    ("value", "written"),
    [(9.0, "9"), (-0.0, "0"), (1e-7, "1e-7"), (1.5e-6, "0.0000015"), (1e21, "1e+21"),
     (123456789.125, "123456789.125"), (2.0**70, "1.1805916207174113e+21")],
)  # fmt: skip
def test_numbers_as_javascript_writes_them(value: float, written: str) -> None:
    assert js_number(value) == written


@pytest.mark.parametrize("value", [float("nan"), float("inf"), object()])
def test_what_json_cannot_hold_is_refused(value: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        js_dumps({"x": value})


@pytest.fixture
def receiver() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    proc = subprocess.Popen(
        [node(), str(NODE_DIR / "verify_receiver.mjs"), "dGVzdHNlY3JldA=="],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    yield f"http://127.0.0.1:{port}/hook", proc
    proc.kill()
    proc.wait()
    proc.stdout.close()


async def test_a_node_receiver_verifies_what_the_gateway_signs(
    receiver: tuple[str, subprocess.Popen[str]],
) -> None:
    url, proc = receiver
    sender = WebhookSender(load_settings(webhook_secret="dGVzdHNlY3JldA=="))
    try:
        payload = {"type": "prompt.complete", "id": "job-1", "prompt": {"3": {"inputs": ODD}}}
        assert await sender.deliver(url, payload, msg_id="job-1", job_id="job-1", trusted=True)
    finally:
        await sender.aclose()
    assert proc.stdout is not None
    seen = json.loads(proc.stdout.readline())
    assert seen == {"verified": True, "reserialized_equal": True, "body": seen["body"]}
    assert seen["body"]["prompt"]["3"]["inputs"]["floats"][0] == 9
