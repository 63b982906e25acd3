"""The Comfy API v2, differentially: every request goes to comfy-api-proxy 0.1.6 (run here on the
shared gateway's own ComfyUI) and to the gateway's /api/v2, and the answers must agree in status
and shape, ids, times and file names aside, but for the deliberate differences in
tests/integration/v2_pair.py's DIFFERENCES (docs/compatibility.md says why).

Known quirks of the proxy are handled, not hidden: a polled job may read `expired` for a moment
(poll() steps over it), its event stream may end on `running`, and on ComfyUI 0.3.75 its cancel
does nothing (the tests clean up through ComfyUI and assert that this is what happened).
"""

from __future__ import annotations

import base64
import io
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from tests.integration.harness import Gateway, graph
from tests.integration.test_prompt import empty_image
from tests.integration.v2_pair import Pair, paired, poll, sse


@pytest.fixture(scope="module")
def pair(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with paired(gateway, tmp_path_factory.mktemp("proxy")) as both:
        yield both


def submit(pair: Pair, workflow: dict[str, Any], **extra: Any) -> tuple[str, str]:
    """Submit to both; the two job ids."""
    proxy, gateway = pair.both("POST", "/api/v2/jobs", json={"workflow": workflow, **extra})
    assert proxy.status_code == gateway.status_code == 201, (proxy.text, gateway.text)
    pair.same_shape(proxy.json(), gateway.json())
    assert proxy.json()["status"] == gateway.json()["status"] == "queued"
    uuid.UUID(gateway.json()["id"])
    return proxy.json()["id"], gateway.json()["id"]


def pixel(data: bytes) -> tuple[int, ...]:
    image = Image.open(io.BytesIO(data))
    return tuple(image.convert("RGB").getpixel((1, 1)))


def test_health(pair: Pair) -> None:
    proxy, gateway = pair.both("GET", "/api/v2/health")
    assert proxy.status_code == gateway.status_code == 200
    pair.same_shape(proxy.json(), gateway.json())
    assert proxy.json()["status"] == gateway.json()["status"] == "healthy"


def test_a_job_runs_and_its_output_is_an_asset(pair: Pair) -> None:
    workflow = empty_image(0x203040, prefix="v2diff")
    ids = submit(pair, workflow, metadata="batch-7", priority=3)
    (proxy, proxy_seen), (gateway, _) = (poll(pair.proxy, ids[0]), poll(pair.gateway, ids[1]))
    assert proxy["status"] == gateway["status"] == "succeeded", (proxy_seen, gateway)
    times = {"started_at": "started_at", "completed_at": "completed_at"}
    sizes = {"outputs[0].size_bytes": "size_bytes"}
    assert pair.same_shape(proxy, gateway, times | sizes) == set(times)
    assert gateway["metadata"] == proxy["metadata"] == "batch-7" and gateway["priority"] == 3
    (p_out,), (g_out,) = proxy["outputs"], gateway["outputs"]
    for key in ("node_id", "type", "content_type"):
        assert p_out[key] == g_out[key], key
    assert g_out["node_id"] == "2" and g_out["size_bytes"] > 0 == p_out["size_bytes"]
    pair.seen.add("size_bytes")
    base = str(pair.gateway.base_url).rstrip("/")
    assert g_out["url"] == f"{base}/api/v2/assets/{g_out['id']}/content"

    # the output as an asset, its bytes, and a range of them
    p_asset, g_asset = (
        pair.proxy.get(f"/api/v2/assets/{p_out['id']}"),
        pair.gateway.get(f"/api/v2/assets/{g_out['id']}"),
    )
    assert p_asset.status_code == g_asset.status_code == 200
    pair.same_shape(p_asset.json(), g_asset.json())
    p_file, g_file = pair.proxy.get(p_out["url"]), pair.gateway.get(g_out["url"])
    assert p_file.status_code == g_file.status_code == 200
    assert p_file.headers["content-type"] == g_file.headers["content-type"] == "image/png"
    assert pixel(p_file.content) == pixel(g_file.content) == (0x20, 0x30, 0x40)
    assert len(g_file.content) == g_out["size_bytes"] == g_asset.json()["size_bytes"]
    head = {"Range": "bytes=0-9"}
    p_part, g_part = (
        pair.proxy.get(p_out["url"], headers=head),
        pair.gateway.get(g_out["url"], headers=head),
    )
    assert p_part.status_code == g_part.status_code == 206
    assert p_part.content == g_part.content == g_file.content[:10]
    assert g_part.headers["content-range"] == f"bytes 0-9/{len(g_file.content)}"
    far = {"Range": "bytes=99999999-"}
    p_far, g_far = (
        pair.proxy.get(p_out["url"], headers=far),
        pair.gateway.get(g_out["url"], headers=far),
    )
    assert (p_far.status_code, p_far.json()["error"]["code"]) == (502, "upstream_error")
    assert g_far.status_code == 416 and g_far.headers["content-range"].startswith("bytes */")
    pair.seen.add("416")

    # the graph it ran
    p_flow, g_flow = (
        c.get(f"/api/v2/jobs/{i}/workflow") for c, i in zip(pair.clients, ids, strict=True)
    )
    assert p_flow.status_code == g_flow.status_code == 200
    assert p_flow.json() == g_flow.json() == {"workflow": workflow, "format": "api"}


def test_a_failed_job_names_the_node(pair: Pair) -> None:
    ids = submit(pair, graph("g3_exec_error"))
    (proxy, _), (gateway, _) = poll(pair.proxy, ids[0]), poll(pair.gateway, ids[1])
    assert proxy["status"] == gateway["status"] == "failed"
    times = {"started_at": "started_at", "completed_at": "completed_at"}
    pair.same_shape(proxy, gateway, times)
    p_error, g_error = proxy["error"], gateway["error"]
    assert p_error["code"] == g_error["code"] == "node_execution_error"
    assert p_error["node_id"] == g_error["node_id"] == "2"
    assert p_error["class_type"] == g_error["class_type"] == "ImageToMask"
    assert p_error["message"].strip() == g_error["message"].strip() != ""


ASSET_REF = {"__type": "core/ASSET", "info": {"id": "no-such-asset"}}


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_request"),
        ({"workflow": empty_image(1), "webhook_url": "https://x.example"}, 422, "invalid_workflow"),
        ({"workflow": empty_image(1), "inputs": {"a": 1}}, 422, "invalid_workflow"),
        ({}, 422, "invalid_workflow"),
        ({"workflow": "a graph"}, 422, "invalid_workflow"),
        ({"workflow": {"nodes": [], "links": []}}, 422, "workflow_format_ui"),
        ({"workflow": empty_image(1), "metadata": 5}, 422, "invalid_request"),
        ({"workflow": empty_image(1), "metadata": "x" * 1025}, 422, "invalid_request"),
        ({"workflow": empty_image(1), "priority": True}, 422, "invalid_request"),
        ({"workflow": empty_image(1), "priority": 10**7}, 422, "invalid_request"),
        ({"workflow": empty_image(1), "extra_data": {"other": 1}}, 400, "invalid_request"),
        ({"workflow": empty_image(1), "extra_data": {"api_key_comfy_org": 1}},
         400, "invalid_request"),
        ({"workflow": graph("g4_validation_error")}, 422, "invalid_workflow"),
        ({"workflow": graph("g5_unknown_node")}, 422, "invalid_workflow"),
        ({"workflow": graph("g6_no_outputs")}, 422, "invalid_workflow"),
        ({"workflow": graph("g7_missing_input")}, 422, "invalid_workflow"),
        ({"workflow": {"1": {"class_type": "LoadImage", "inputs": {"image": ASSET_REF}}}},
         422, "missing_asset"),
        ([1, 2], 400, "invalid_request"),  # the proxy: text/plain 500
    ],
    ids=lambda v: str(v)[:40] if not isinstance(v, dict) else None,
)  # fmt: skip
def test_submissions_refused_alike(pair: Pair, body: Any, status: int, code: str) -> None:
    kwargs: dict[str, Any] = {"content": body} if isinstance(body, bytes) else {"json": body}
    proxy, gateway = pair.both("POST", "/api/v2/jobs", **kwargs)
    if isinstance(body, list):
        assert proxy.status_code == 500 and proxy.headers["content-type"].startswith("text/plain")
        pair.seen.add("text/plain errors")
        assert gateway.status_code == status and gateway.json()["error"]["code"] == code
        return
    ours = pair.same_error(proxy, gateway, status, code)
    theirs = proxy.json()["error"]["details"] or {}
    if "node_errors" in theirs:
        assert set(ours["error"]["details"]["node_errors"]) == set(theirs["node_errors"])
    if code == "missing_asset":
        assert ours["error"]["details"] == theirs == {"missing_ids": ["no-such-asset"]}


def test_idempotency_keys_are_single_use(pair: Pair) -> None:
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    body = {"workflow": empty_image(0x0F0F0F, prefix="v2idem")}
    first = pair.both("POST", "/api/v2/jobs", json=body, headers=key)
    assert first[0].status_code == first[1].status_code == 201
    again = pair.both("POST", "/api/v2/jobs", json=body, headers=key)
    pair.same_error(*again, 422, "idempotency_key_reuse")
    for bad in ("", "k" * 256):
        pair.same_error(
            *pair.both("POST", "/api/v2/jobs", json=body, headers={"Idempotency-Key": bad}),
            400,
            "invalid_request",
        )
    poll(pair.proxy, first[0].json()["id"]), poll(pair.gateway, first[1].json()["id"])


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/api/v2/jobs/not-a-uuid", 404, "not_found"),
        ("GET", f"/api/v2/jobs/{uuid.uuid4()}", 404, "not_found"),
        ("GET", f"/api/v2/jobs/{uuid.uuid4()}/workflow", 404, "not_found"),
        ("POST", f"/api/v2/jobs/{uuid.uuid4()}/cancel", 404, "not_found"),
        ("GET", f"/api/v2/jobs/{uuid.uuid4()}/events", 404, "not_found"),
        ("GET", "/api/v2/jobs?limit=x", 400, "invalid_request"),
        ("GET", "/api/v2/jobs?limit=0", 400, "invalid_request"),
        ("GET", "/api/v2/jobs?limit=101", 400, "invalid_request"),
        ("GET", "/api/v2/jobs?status=done,bogus", 400, "invalid_request"),
        ("GET", "/api/v2/nothing-here", 404, "not_found"),
        ("DELETE", "/api/v2/jobs", 405, "method_not_allowed"),
    ],
)
def test_unknown_ids_bad_queries_and_routes(
    pair: Pair, method: str, path: str, status: int, code: str
) -> None:
    pair.same_error(*pair.both(method, path), status, code)


def test_jobs_are_listed_newest_first_and_filtered(pair: Pair) -> None:
    proxy, gateway = pair.both("GET", "/api/v2/jobs", params={"limit": 2})
    assert proxy.status_code == gateway.status_code == 200
    assert set(proxy.json()) == set(gateway.json()) == {"jobs", "truncated"}
    assert len(proxy.json()["jobs"]) == len(gateway.json()["jobs"]) == 2
    assert proxy.json()["truncated"] is gateway.json()["truncated"] is False
    for p_job, g_job in zip(proxy.json()["jobs"], gateway.json()["jobs"], strict=True):
        times = {"started_at": "started_at", "completed_at": "completed_at"}
        sizes = {f"outputs[{i}].size_bytes": "size_bytes" for i in range(4)}
        pair.same_shape(p_job, g_job, times | sizes)
    for client in pair.clients:
        jobs = client.get("/api/v2/jobs", params={"status": "failed"}).json()["jobs"]
        assert jobs and {job["status"] for job in jobs} == {"failed"}
        created = [job["created_at"] for job in client.get("/api/v2/jobs").json()["jobs"]]
        assert created == sorted(created, reverse=True)


def test_a_finished_jobs_events_are_its_status_and_outputs(pair: Pair) -> None:
    ids = submit(pair, empty_image(0x404040, prefix="v2sse"))
    poll(pair.proxy, ids[0]), poll(pair.gateway, ids[1])
    proxy, gateway = sse(pair.proxy, ids[0]), sse(pair.gateway, ids[1])
    assert [kind for kind, _ in proxy] == [kind for kind, _ in gateway] == ["status", "output"]
    assert proxy[0][1] == gateway[0][1] == {"status": "succeeded"}
    pair.same_shape(proxy[1][1], gateway[1][1], {"size_bytes": "size_bytes"})


def test_live_events_end_with_the_job(pair: Pair) -> None:
    ids = []
    for client, seed in zip(pair.clients, (101, 102), strict=True):
        workflow = graph("t2i")
        workflow["5"]["inputs"].update(seed=seed, steps=4)
        answer = client.post("/api/v2/jobs", json={"workflow": workflow})
        assert answer.status_code == 201
        ids.append(answer.json()["id"])
    proxy, gateway = sse(pair.proxy, ids[0]), sse(pair.gateway, ids[1])
    statuses = [data["status"] for kind, data in gateway if kind == "status"]
    assert statuses[-1] == "succeeded" and "running" in statuses
    assert {kind for kind, _ in gateway} == {"status", "progress", "preview", "output"}
    assert gateway[-1][0] == "output"
    assert all(0 <= data["value"] <= 1 for kind, data in gateway if kind == "progress")
    p_kinds = {kind for kind, _ in proxy}
    assert p_kinds <= {"status", "progress", "output", "preview"}
    # previews (PREVIEW_METHOD auto: latent2rgb on CPU) in the proxy's shape, while it runs
    p_previews = [data for kind, data in proxy if kind == "preview"]
    g_previews = [data for kind, data in gateway if kind == "preview"]
    assert p_previews and g_previews
    kinds = [kind for kind, _ in gateway]
    assert kinds.index("preview") < len(kinds) - 1 - kinds[::-1].index("status")
    for p_preview, g_preview in zip(p_previews, g_previews, strict=False):
        pair.same_shape(p_preview, g_preview)
    for data in p_previews + g_previews:
        assert (data["node_id"], data["content_type"]) == ("5", "image/jpeg")
        with Image.open(io.BytesIO(base64.b64decode(data["data_base64"]))) as image:
            assert image.width == image.height  # a 64x64 latent's preview
    proxy_last = [data["status"] for kind, data in proxy if kind == "status"][-1]
    if proxy_last not in ("succeeded",):  # the proxy's terminal race: poll, as its docs say
        assert proxy_last == "running"
    pair.seen.add("status events")
    (p_final, _), (g_final, _) = poll(pair.proxy, ids[0]), poll(pair.gateway, ids[1])
    assert p_final["status"] == g_final["status"] == "succeeded"
