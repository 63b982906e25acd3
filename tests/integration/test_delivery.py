"""Webhooks, system events, job status and live progress, against real receivers and ComfyUI."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from tests.integration.harness import Gateway, free_port, graph, running
from tests.integration.receiver import Receiver
from tests.integration.test_prompt import (
    decode_image,
    empty_image,
    slow_graph,
    wait_for_comfy_queue,
)

SECRET = "whsec_" + base64.b64encode(b"comfy-gateway test secret 32 by").decode()
META = {"SYSTEM_META_REGION": "test-region", "SYSTEM_META_POD": "pod-1"}
# comfyui-api's SaladCloud variables: `salad_*` metadata on every system event, in their order.
SALAD = {"SALAD_MACHINE_ID": "machine-7", "SALAD_ORGANIZATION_NAME": "acme"}
EVENT_METADATA = {
    "REGION": "test-region",
    "POD": "pod-1",
    "salad_organization_name": "acme",
    "salad_machine_id": "machine-7",
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Gateway]:
    env = {
        "WEBHOOK_SECRET": SECRET,
        "PROMPT_WEBHOOK_RETRIES": "5",
        "WEBHOOK_BACKOFF_S": "0.5",
        "WEBHOOK_TIMEOUT_S": "1",
        "SYSTEM_WEBHOOK_URL": receiver.url("/system"),
        "SYSTEM_WEBHOOK_EVENTS": "all",
        "ALWAYS_RESTART_COMFYUI": "true",
        "SHUTDOWN_GRACE_S": "3",
        "ALLOWED_PRIVATE_NETWORKS": "127.0.0.1/32",  # the receivers; refused by default
        **META,
        **SALAD,
    }
    with running(tmp_path_factory.mktemp("delivery"), **env) as gw:
        yield gw


def verified(delivery: Any) -> Any:
    """The payload, after checking its Standard Webhooks signature."""
    return Webhook(SECRET).verify(delivery.body, delivery.headers)


def delivered_once(deliveries: list[Any]) -> Any:
    """The one delivery of a webhook: every copy the receiver got has the same webhook-id and
    body. A copy comes twice when the receiver answered after WEBHOOK_TIMEOUT_S (1 s in this
    module: a busy machine), and a receiver drops the repeat by its id (Standard Webhooks)."""
    assert deliveries, "nothing was delivered"
    assert {(d.headers["webhook-id"], d.body) for d in deliveries} == {
        (deliveries[0].headers["webhook-id"], deliveries[0].body)
    }, [d.headers["webhook-id"] for d in deliveries]
    return deliveries[0]


def accepted(response: httpx.Response, request_id: str) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    assert body["id"] == request_id
    assert body["status"] == "ok"
    assert body["prompt"]
    return body


def test_legacy_webhook_one_output(client: httpx.Client, receiver: Receiver) -> None:
    url = receiver.url("/legacy-1")
    response = client.post(
        "/prompt", json={"prompt": graph("g1_empty_save"), "id": "legacy-1", "webhook": url}
    )
    body = accepted(response, "legacy-1")
    assert body["prompt"]["2"]["inputs"]["filename_prefix"].startswith("ci_empty_")
    [delivery] = receiver.wait_for("/legacy-1", 1)
    payload = verified(delivery)
    assert payload["event"] == "output.complete"
    assert payload["id"] == "legacy-1"
    assert payload["prompt"] == body["prompt"]
    assert payload["filename"].endswith(".png")
    image = decode_image(payload["image"])
    assert image.size == (64, 64)
    assert image.convert("RGB").getpixel((1, 1)) == (255, 0, 0)


def test_legacy_webhook_four_outputs(client: httpx.Client, receiver: Receiver) -> None:
    prompt = empty_image(0x0000FF, width=16, height=8)
    prompt["1"]["inputs"]["batch_size"] = 4
    url = receiver.url("/legacy-4")
    accepted(client.post("/prompt", json={"prompt": prompt, "id": "l4", "webhook": url}), "l4")
    deliveries = receiver.wait_for("/legacy-4", 4)
    time.sleep(0.5)
    assert len(receiver.deliveries("/legacy-4")) == 4
    payloads = [verified(d) for d in deliveries]
    assert {p["id"] for p in payloads} == {"l4"}
    assert len({p["filename"] for p in payloads}) == 4
    assert len({d.headers["webhook-id"] for d in deliveries}) == 4
    for p in payloads:
        assert decode_image(p["image"]).size == (16, 8)


def test_webhook_v2_success_is_signed_and_complete(
    client: httpx.Client, receiver: Receiver
) -> None:
    url = receiver.url("/v2-ok")
    accepted(
        client.post(
            "/prompt", json={"prompt": graph("g1_empty_save"), "id": "v2-ok", "webhook_v2": url}
        ),
        "v2-ok",
    )
    [delivery] = receiver.wait_for("/v2-ok", 1)
    assert delivery.headers["webhook-id"] == "v2-ok"
    payload = verified(delivery)
    assert payload["type"] == "prompt.complete"
    datetime.fromisoformat(payload["timestamp"])
    assert payload["id"] == "v2-ok"
    assert set(payload) >= {"prompt", "images", "filenames", "stats"}
    assert "warnings" not in payload  # nothing was ignored
    assert decode_image(payload["images"][0]).size == (64, 64)


def test_ignored_convert_options_are_named_in_every_answer_of_an_async_job(
    client: httpx.Client, receiver: Receiver
) -> None:
    """The header is lost to a 202: the webhooks and GET /prompt/{id} carry `warnings`."""
    body = {
        "prompt": graph("g1_empty_save"),
        "id": "warned",
        "webhook": receiver.url("/warned-v1"),
        "webhook_v2": receiver.url("/warned-v2"),
        "convert_output": {"format": "jpeg", "options": {"quality": 80, "mozjpeg": True}},
    }
    response = client.post("/prompt", json=body)
    accepted(response, "warned")
    named = ["convert_output.options.mozjpeg (no Pillow equivalent)"]
    assert response.headers["x-convert-output-ignored"] == named[0]
    [v2] = receiver.wait_for("/warned-v2", 1)
    payload = verified(v2)
    assert payload["warnings"] == named
    assert decode_image(payload["images"][0]).format == "JPEG"
    [legacy] = receiver.wait_for("/warned-v1", 1)
    assert verified(legacy)["warnings"] == named
    assert client.get("/prompt/warned").json()["result"]["warnings"] == named
    del body["webhook"], body["webhook_v2"]
    body["id"] = "warned-sync"
    answer = client.post("/prompt", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["warnings"] == named


def test_webhook_v2_and_legacy_failure(client: httpx.Client, receiver: Receiver) -> None:
    body = {
        "prompt": graph("g3_exec_error"),
        "id": "v2-fail",
        "webhook_v2": receiver.url("/v2-fail"),
        "webhook": receiver.url("/legacy-fail"),
    }
    accepted(client.post("/prompt", json=body), "v2-fail")
    payload = verified(receiver.wait_for("/v2-fail", 1)[0])
    assert payload["type"] == "prompt.failed"
    assert payload["id"] == "v2-fail"
    assert payload["code"] == "execution_failed"
    assert payload["details"]["node_id"] == "2"
    assert "ImageToMask" in payload["error"]
    legacy = verified(receiver.wait_for("/legacy-fail", 1)[0])
    assert legacy["event"] == "prompt.failed"
    assert legacy["id"] == "v2-fail"
    assert legacy["error"] == payload["error"]


def test_graph_comfyui_refuses_is_a_400_not_a_webhook(
    client: httpx.Client, receiver: Receiver
) -> None:
    body = {"prompt": graph("g4_validation_error"), "webhook_v2": receiver.url("/never")}
    assert client.post("/prompt", json=body).status_code == 400
    time.sleep(0.3)
    assert receiver.deliveries("/never") == []


@pytest.mark.parametrize("url", ["not a url", "ftp://example.com/x"])
def test_bad_webhook_url_is_a_400(client: httpx.Client, url: str) -> None:
    response = client.post("/prompt", json={"prompt": graph("g1_empty_save"), "webhook": url})
    assert response.status_code == 400
    assert response.json()["location"] == "webhook"


def test_webhook_outside_the_allowed_networks_is_a_located_400(
    client: httpx.Client, gateway: Gateway
) -> None:
    """ALLOWED_PRIVATE_NETWORKS=127.0.0.1/32 lets that address through, and no other."""
    elsewhere = Receiver(host="127.0.0.2")
    try:
        for field in ("webhook", "webhook_v2"):
            body = {"prompt": graph("g1_empty_save"), field: elsewhere.url("/never")}
            response = client.post("/prompt", json=body)
            assert response.status_code == 400, response.text
            assert response.json()["location"] == field
            assert "127.0.0.2" in response.json()["error"]
        time.sleep(0.3)
        assert elsewhere.connections == 0
    finally:
        elsewhere.close()


def test_retried_after_two_500s(client: httpx.Client, receiver: Receiver) -> None:
    url = receiver.script("/flaky", 500, 503)
    body = {"prompt": graph("g1_empty_save"), "id": "flaky", "webhook_v2": url}
    accepted(client.post("/prompt", json=body), "flaky")
    deliveries = receiver.wait_for("/flaky", 3)
    time.sleep(1.5)
    assert len(receiver.deliveries("/flaky")) == 3
    assert {d.headers["webhook-id"] for d in deliveries} == {"flaky"}
    assert deliveries[1].at - deliveries[0].at >= 0.35  # backed off
    assert verified(deliveries[2])["type"] == "prompt.complete"


def test_other_4xx_is_not_retried(
    client: httpx.Client, receiver: Receiver, gateway: Gateway
) -> None:
    url = receiver.script("/gone", 410)
    accepted(
        client.post(
            "/prompt", json={"prompt": graph("g1_empty_save"), "id": "gone", "webhook_v2": url}
        ),
        "gone",
    )
    receiver.wait_for("/gone", 1)
    time.sleep(1.5)
    assert len(receiver.deliveries("/gone")) == 1
    assert "job gone: could not deliver prompt.complete" in gateway.log_text()


def test_receiver_down_at_first(client: httpx.Client) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/late"
    accepted(
        client.post(
            "/prompt", json={"prompt": graph("g1_empty_save"), "id": "late", "webhook_v2": url}
        ),
        "late",
    )
    time.sleep(1.0)
    late = Receiver(port)
    try:
        [delivery] = late.wait_for("/late", 1, timeout_s=15)
        assert verified(delivery)["type"] == "prompt.complete"
    finally:
        late.close()


def test_hanging_receiver_times_out_then_retries(client: httpx.Client, receiver: Receiver) -> None:
    url = receiver.script("/hang", delays_s=(3.0,))
    accepted(
        client.post(
            "/prompt", json={"prompt": graph("g1_empty_save"), "id": "hang", "webhook_v2": url}
        ),
        "hang",
    )
    deliveries = receiver.wait_for("/hang", 2, timeout_s=15)
    assert deliveries[1].at - deliveries[0].at < 2.9  # did not wait for the hung answer
    time.sleep(1.0)
    assert len(receiver.deliveries("/hang")) == 2


def test_system_events_carry_the_request_id_and_metadata(
    client: httpx.Client, receiver: Receiver
) -> None:
    prompt = graph("t2i")
    prompt["5"]["inputs"].update(steps=3, seed=11)
    assert client.post("/prompt", json={"prompt": prompt, "id": "sys-1"}).status_code == 200

    def ours() -> list[dict[str, Any]]:
        events = [verified(d) for d in receiver.deliveries("/system")]
        return [e for e in events if e["data"].get("prompt_id") == "sys-1"]

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "comfy.execution_success" not in {
        e["event"] for e in ours()
    }:
        time.sleep(0.1)
    kinds = [e["event"] for e in ours()]
    assert {"comfy.executed", "comfy.execution_success", "comfy.progress"} <= set(kinds)
    assert kinds.index("comfy.execution_start") < kinds.index("comfy.execution_success")
    assert all(e["metadata"] == EVENT_METADATA for e in ours())
    salad_order = [k for k in ours()[0]["metadata"] if k.startswith("salad_")]
    assert salad_order == ["salad_organization_name", "salad_machine_id"]  # after SYSTEM_META_*
    progress = [e["data"] for e in ours() if e["event"] == "comfy.progress"]
    assert progress[-1]["max"] == 3


def test_job_status_through_its_life(client: httpx.Client, receiver: Receiver) -> None:
    prompt = graph("t2i")
    prompt["5"]["inputs"].update(steps=40, seed=12)
    url = receiver.url("/status")
    accepted(
        client.post("/prompt", json={"prompt": prompt, "id": "st-1", "webhook_v2": url}), "st-1"
    )
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = client.get("/prompt/st-1").json()
        seen.append(state)
        if state["status"] not in ("queued", "running"):
            break
        time.sleep(0.05)
    statuses = [s["status"] for s in seen]
    assert statuses[-1] == "succeeded"
    assert "running" in statuses
    assert any(s["progress"]["max"] == 40 and s["progress"]["value"] > 0 for s in seen)
    assert decode_image(seen[-1]["result"]["images"][0]).size == (64, 64)
    assert seen[-1]["error"] is None
    missing = client.get("/prompt/never-was")
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"


def test_queued_job_reports_its_position(gateway: Gateway, client: httpx.Client) -> None:
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(
            client.post, "/prompt", json={"prompt": slow_graph(seed=21), "id": "q-first"}
        )
        wait_for_comfy_queue(gateway, running=1)
        second = pool.submit(
            client.post, "/prompt", json={"prompt": slow_graph(seed=22), "id": "q-second"}
        )
        wait_for_comfy_queue(gateway, running=1, pending=1)
        state = client.get("/prompt/q-second").json()
        assert state["status"] == "queued"
        assert state["queue_position"] == 0
        assert client.get("/prompt/q-first").json()["status"] == "running"
        for request_id in ("q-second", "q-first"):
            assert client.post("/interrupt", json={"id": request_id}).status_code == 200
        assert first.result().status_code == second.result().status_code == 409
    assert client.get("/prompt/q-first").json()["status"] == "interrupted"


def read_sse(response: httpx.Response, stop_after: int | None = None) -> list[dict[str, Any]]:
    """Parse a Server-Sent Events body into [{id, event, data}]."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for line in response.iter_lines():
        if line == "":
            if current:
                events.append(current)
                current = {}
                if stop_after is not None and len(events) >= stop_after:
                    break
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(": ")
        current[key] = json.loads(value) if key == "data" else int(value) if key == "id" else value
    return events


def test_event_stream_of_a_multi_step_job_with_resume(client: httpx.Client) -> None:
    prompt = graph("t2i")
    prompt["5"]["inputs"].update(steps=8, seed=13)
    # ComfyUI 0.33 sends a step's progress only 100 ms after the last one (first and last
    # always): at 256 px a step takes about 250 ms here, so every step is sent on each version.
    prompt["4"]["inputs"].update(width=256, height=256)
    body = {"prompt": prompt, "id": "sse-1"}
    with client.stream("POST", "/prompt", json=body, headers={"Accept": "text/event-stream"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = read_sse(r)
    previews = [e for e in events if e["event"] == "preview"]
    events = [e for e in events if e["event"] != "preview"]  # the job's log: previews are not in it
    kinds = [e["event"] for e in events]
    assert kinds[0] == "queued"
    assert kinds[-1] == "complete"
    assert {"running", "executing", "progress"} <= set(kinds)
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert all(p["id"] < len(events) for p in previews)  # a preview has its event's id
    steps = [e["data"] for e in events if e["event"] == "progress" and e["data"]["max"] == 8]
    assert [s["value"] for s in steps] == list(range(1, 9))
    assert decode_image(events[-1]["data"]["images"][0]).size == (256, 256)

    # A client that lost the stream after event 3 resumes with Last-Event-ID.
    headers = {"Last-Event-ID": "3"}
    with client.stream("GET", "/prompt/sse-1/events", headers=headers) as r:
        resumed = read_sse(r)
    assert [e["id"] for e in resumed] == [e["id"] for e in events[3:]]


def test_event_stream_reconnect_mid_job(client: httpx.Client, gateway: Gateway) -> None:
    prompt = graph("t2i")
    prompt["5"]["inputs"].update(steps=30, seed=14)
    accepted(
        client.post(
            "/prompt", json={"prompt": prompt, "id": "sse-2", "webhook": "http://127.0.0.1:9/x"}
        ),
        "sse-2",
    )
    with client.stream("GET", "/prompt/sse-2/events") as r:
        first = read_sse(r, stop_after=3)
    with client.stream(
        "GET", "/prompt/sse-2/events", headers={"Last-Event-ID": str(first[-1]["id"])}
    ) as r:
        rest = read_sse(r)
    ids = [e["id"] for e in first + rest if e["event"] != "preview"]  # previews repeat an id
    assert ids == list(range(1, len(ids) + 1))
    assert rest[-1]["event"] == "complete"


def test_reconnecting_to_a_finished_job_gets_what_it_lacks_then_stops(
    client: httpx.Client,
) -> None:
    """What a browser's EventSource does after every job: reconnect with the last id it saw."""
    body = {"prompt": graph("g1_empty_save"), "id": "sse-done"}
    with client.stream("POST", "/prompt", json=body, headers={"Accept": "text/event-stream"}) as r:
        events = read_sse(r)
    last = events[-1]["id"]
    for resume in (last, last + 10):  # at the last event, or past it: nothing is lacking
        answer = client.get("/prompt/sse-done/events", headers={"Last-Event-ID": str(resume)})
        assert answer.status_code == 204, answer.text
    with client.stream(
        "GET", "/prompt/sse-done/events", headers={"Last-Event-ID": str(last - 1)}
    ) as r:
        assert [e["event"] for e in read_sse(r)] == ["complete"]  # then the stream ends


@pytest.mark.parametrize("bad", ["abc", "-1", "1.5"])
def test_a_last_event_id_never_sent_is_a_located_400(client: httpx.Client, bad: str) -> None:
    body = {"prompt": graph("g1_empty_save"), "id": "sse-bad"}
    assert client.post("/prompt", json=body).status_code == 200
    answer = client.get("/prompt/sse-bad/events", headers={"Last-Event-ID": bad})
    assert answer.status_code == 400, answer.text
    assert answer.json()["location"] == "Last-Event-ID"


EVENT_SOURCE_PAGE = """<!doctype html><body>waiting<script>
const seen = [];
const source = new EventSource(%(url)s);
for (const kind of ["queued", "running", "executing", "progress", "complete", "failed"]) {
  source.addEventListener(kind, (e) => seen.push(kind + ":" + e.lastEventId));
}
source.onerror = () => {
  seen.push("error:" + source.readyState);
  if (source.readyState === EventSource.CLOSED) document.body.textContent = JSON.stringify(seen);
};
</script></body>"""


def test_a_browser_event_source_stops_after_a_finished_job(
    client: httpx.Client, gateway: Gateway, tmp_path: Path
) -> None:
    """Chromium's own EventSource: it reads the stream, reconnects with Last-Event-ID when the
    server closes it, gets 204 and stops. Before, that reconnect hung open forever."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is missing: `make test` installs it")
    assert client.post("/prompt", json={"prompt": graph("g1_empty_save"), "id": "es-1"}).is_success
    page = tmp_path / "events.html"
    page.write_text(EVENT_SOURCE_PAGE % {"url": json.dumps(f"{gateway.url}/prompt/es-1/events")})
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
        "--disable-background-networking", "--disable-component-update", "--disable-quic",
        "--disable-web-security",  # the page is a file; the gateway is another origin
        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=30000", "--dump-dom",
    ]  # fmt: skip
    done = subprocess.run(
        [chromium, *flags, page.as_uri()], capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(re.search(r"<body>(.*)</body>", done.stdout, re.S).group(1))  # type: ignore[union-attr]
    assert seen[0] == "queued:1"
    assert seen[-3].startswith("complete:")
    assert seen[-2] == "error:0"  # the server ended the stream: CONNECTING, it reconnects...
    assert seen[-1] == "error:2"  # ...gets 204, and is CLOSED: it will not reconnect again


def test_failed_job_stream_ends_with_failed(client: httpx.Client) -> None:
    body = {"prompt": graph("g3_exec_error"), "id": "sse-fail"}
    with client.stream("POST", "/prompt", json=body, headers={"Accept": "text/event-stream"}) as r:
        events = read_sse(r)
    assert events[-1]["event"] == "failed"
    assert events[-1]["data"]["code"] == "execution_failed"
    assert events[-1]["data"]["id"] == "sse-fail"


def test_comfyui_crash_mid_job_is_one_prompt_failed(
    gateway: Gateway, client: httpx.Client, receiver: Receiver
) -> None:
    url = receiver.url("/crash")
    accepted(
        client.post(
            "/prompt", json={"prompt": slow_graph(seed=31), "id": "crash", "webhook_v2": url}
        ),
        "crash",
    )
    wait_for_comfy_queue(gateway, running=1)
    os.kill(gateway.comfy_pid(), signal.SIGKILL)
    [delivery] = receiver.wait_for("/crash", 1)
    payload = verified(delivery)
    assert payload["type"] == "prompt.failed"
    assert payload["code"] == "comfy_unavailable"
    deadline = time.monotonic() + 120
    while client.get("/ready").status_code != 200:
        assert time.monotonic() < deadline, "ComfyUI did not come back"
        time.sleep(0.2)
    time.sleep(0.5)
    assert len(receiver.deliveries("/crash")) == 1


# --- progress webhooks ---------------------------------------------------------------------------


def sampling(steps: int, seed: int) -> dict[str, Any]:
    """txt2img at 256 px: a step takes about 250 ms here, so the throttle lets several through."""
    prompt = graph("t2i")
    prompt["5"]["inputs"].update(steps=steps, seed=seed)
    prompt["4"]["inputs"].update(width=256, height=256)
    return prompt


@pytest.mark.timeout(300)  # two jobs of 6 steps at 256 px: slow on a busy machine
def test_progress_webhooks_each_job_its_own_signed_and_the_outcome_once(
    client: httpx.Client, receiver: Receiver
) -> None:
    for seed, job in enumerate(("pw-a", "pw-b")):  # b waits while a runs: both are in flight
        # seeds of their own: ComfyUI would answer the same graph again from its cache, unrun
        body = {"prompt": sampling(6, 31 + seed), "id": job,
                "webhook_v2": receiver.url(f"/{job}/end"),
                "progress_webhook": receiver.url(f"/{job}/progress")}  # fmt: skip
        accepted(client.post("/prompt", json=body), job)
    for job in ("pw-a", "pw-b"):
        receiver.wait_for(f"/{job}/end", 1, timeout_s=120)
    time.sleep(1.0)  # a second outcome delivery, or a late progress one, would be here by now
    for job in ("pw-a", "pw-b"):
        ended = delivered_once(receiver.deliveries(f"/{job}/end"))  # exactly once
        assert verified(ended)["type"] == "prompt.complete"
        heard = [verified(d) for d in receiver.deliveries(f"/{job}/progress")]
        assert {h["id"] for h in heard} == {job}  # its own job's, only
        assert [h["type"] for h in heard][:1] == ["job.started"]
        assert [h["type"] for h in heard].count("job.started") == 1
        steps = [h for h in heard if h["type"] == "job.progress" and h["node"] == "5"]
        assert steps, heard
        assert {(h["node_name"], h["max"]) for h in steps} == {("KSampler", 6)}
        assert [h["step"] for h in steps] == sorted({h["step"] for h in steps})  # increasing
        assert all(h["percent"] == round(100 * h["step"] / 6, 1) for h in steps)
        ids = [d.headers["webhook-id"] for d in receiver.deliveries(f"/{job}/progress")]
        assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("answer", ["hang", "500"])
def test_a_progress_receiver_that_hangs_or_fails_delays_no_outcome_and_no_job(
    client: httpx.Client, receiver: Receiver, answer: str
) -> None:
    # The job's job.started is tried 5 times (WEBHOOK_TIMEOUT_S=1, back-off 0.5, 1, 2, 4 s):
    # its last attempt comes 7 s (500) or 11 s (hang) after its first, and the job, the next
    # job and both their outcome webhooks come before it.
    path = f"/bad-progress-{answer}"
    if answer == "hang":
        url = receiver.script(path, delays_s=(5.0,) * 5)
    else:
        url = receiver.script(path, *(500,) * 5)
    first, second = f"slowpw-{answer}-1", f"slowpw-{answer}-2"
    body = {"prompt": graph("g1_empty_save"), "id": first, "progress_webhook": url,
            "webhook_v2": receiver.url(f"/{first}/end")}  # fmt: skip
    accepted(client.post("/prompt", json=body), first)
    [ended] = receiver.wait_for(f"/{first}/end", 1)
    plain = {"prompt": graph("g1_empty_save"), "id": second,
             "webhook_v2": receiver.url(f"/{second}/end")}  # fmt: skip
    accepted(client.post("/prompt", json=plain), second)
    [next_ended] = receiver.wait_for(f"/{second}/end", 1)
    attempts = receiver.wait_for(path, 5, timeout_s=30)
    # Both outcomes come while job.started is still being tried. Its first attempt leaves as the
    # job starts, from a task of its own: a job of a few milliseconds may end, and its outcome
    # arrive, before that attempt does (the contract orders none of a job's progress against
    # its outcome; a 0.3.75 run here saw an outcome arrive 0.4 ms ahead of it).
    assert ended.at < next_ended.at < attempts[-1].at
    assert {verified(a)["type"] for a in attempts} == {"job.started"}
    assert verified(ended)["type"] == verified(next_ended)["type"] == "prompt.complete"
    time.sleep(1.0)  # dropped after its attempts; nothing waits, the job has ended
    assert len(receiver.deliveries(path)) == 5
    delivered_once(receiver.deliveries(f"/{first}/end"))


def test_sigterm_with_a_job_in_flight_delivers_one_failure(
    gateway: Gateway, client: httpx.Client, receiver: Receiver
) -> None:
    """Runs last in this module: it stops the module's gateway."""
    url = receiver.url("/shutdown")
    accepted(
        client.post(
            "/prompt", json={"prompt": slow_graph(seed=41), "id": "shut", "webhook_v2": url}
        ),
        "shut",
    )
    wait_for_comfy_queue(gateway, running=1)
    os.kill(gateway.pid, signal.SIGTERM)
    assert gateway.wait_exit(60) == 0
    [delivery] = receiver.wait_for("/shutdown", 1, timeout_s=5)
    payload = verified(delivery)
    assert payload["type"] == "prompt.failed"
    assert payload["code"] == "comfy_unavailable"
    assert "shut down" in payload["error"]
