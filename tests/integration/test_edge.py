"""The production edge over real HTTP: API keys, CORS, /metrics after real jobs, JSON logs.

One gateway (and so one ComfyUI) for the whole module, with API_KEYS, CORS_ALLOW_ORIGINS,
LOG_FORMAT=json and COMFY_PASSTHROUGH=full (ComfyUI's admin endpoints, for key holders) set, and
a real webhook receiver.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.core.metrics import JOB_BUCKETS_S
from tests.integration.harness import Gateway, eventually, graph, running
from tests.integration.receiver import Receiver
from tests.integration.test_prompt import empty_image, slow_graph, wait_for_comfy_queue

KEY = "edge-test-key-0123456789"
OTHER = "edge-other-key-ABCDEFGHIJ"
ORIGIN = "https://app.example.com"
REFUSED = "https://evil.example.net"
WORKFLOW = "sd15/txt2img"
BEARER = {"Authorization": f"Bearer {KEY}"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    env = {
        "API_KEYS": f"{KEY},{OTHER}",
        "CORS_ALLOW_ORIGINS": f"{ORIGIN},http://localhost:5173",
        "LOG_FORMAT": "json",
        "MAX_QUEUE_DEPTH": "4",
        "PROMPT_WEBHOOK_RETRIES": "1",
        "WEBHOOK_TIMEOUT_S": "5",
        "COMFY_PASSTHROUGH": "full",
        "ALLOWED_PRIVATE_NETWORKS": "127.0.0.1/32",  # the webhook receiver
    }
    with running(tmp_path_factory.mktemp("edge"), **env) as gw:
        yield gw


def scrape(client: httpx.Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def get(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples) -> Callable[..., float]:
    def change(name: str, **labels: str) -> float:
        return get(after, name, **labels) - get(before, name, **labels)

    return change


def assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert set(body) <= {"error", "code", "location", "details"}
    assert body["code"] == "unauthorized"


# --- API keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [("/health", 200), ("/ready", 200), ("/metrics", 200), ("/docs", 200),
     ("/openapi.json", 200)],
)  # fmt: skip
def test_probes_metrics_and_docs_need_no_key(client: httpx.Client, path: str, status: int) -> None:
    assert client.get(path).status_code == status


@pytest.mark.parametrize(
    "headers",
    [BEARER, {"Authorization": f"bearer {OTHER}"}, {"X-API-Key": KEY}, {"X-API-Key": OTHER}],
    ids=["bearer", "bearer-second-key", "x-api-key", "x-api-key-second-key"],
)
def test_a_right_key_runs_a_job(client: httpx.Client, headers: dict[str, str]) -> None:
    response = client.post("/prompt", json={"prompt": empty_image(0x123456)}, headers=headers)
    assert response.status_code == 200, response.text
    assert len(response.json()["images"]) == 1


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("POST", "/prompt", {}),
        ("POST", "/prompt", {"Authorization": "Bearer not-a-key-0123456789"}),
        ("POST", "/prompt", {"X-API-Key": KEY + "x"}),
        ("POST", "/prompt", {"Authorization": f"Basic {KEY}"}),
        ("GET", "/models", {}),
        ("GET", "/workflows", {"X-API-Key": ""}),
        ("POST", f"/workflows/{WORKFLOW}", {}),  # mounted at start-up, after the middleware
        ("POST", f"/workflow/{WORKFLOW}", {"X-API-Key": OTHER[:-1]}),
        ("GET", "/prompt/some-id", {}),
    ],
    ids=["missing", "wrong-bearer", "wrong-x-api-key", "basic", "models", "workflows",
         "workflow-route", "workflow-alias", "job-state"],
)  # fmt: skip
def test_missing_or_wrong_key_is_a_401(
    client: httpx.Client, method: str, path: str, headers: dict[str, str]
) -> None:
    body = {"prompt": empty_image(1)} if method == "POST" else None
    assert_401(client.request(method, path, json=body, headers=headers))


def test_openapi_offers_both_key_headers(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert set(spec["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    route = spec["paths"][f"/workflows/{WORKFLOW}"]["post"]
    assert route["security"] == [{"bearer": []}, {"apiKey": []}]
    assert "security" not in spec["paths"]["/ready"]["get"]


# --- CORS --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/prompt", f"/workflows/{WORKFLOW}", f"/workflow/{WORKFLOW}"])
def test_preflight_is_answered_without_a_key(client: httpx.Client, path: str) -> None:
    headers = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    allowed = client.options(path, headers=headers)
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    refused = client.options(path, headers={**headers, "Origin": REFUSED})
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers


@pytest.mark.parametrize(("origin", "tagged"), [(ORIGIN, True), (REFUSED, False)])
@pytest.mark.parametrize("with_key", [True, False], ids=["key", "no-key"])
def test_simple_requests_are_tagged_for_allowed_origins(
    client: httpx.Client, origin: str, tagged: bool, with_key: bool
) -> None:
    headers = {"Origin": origin, **(BEARER if with_key else {})}
    response = client.post("/prompt", json={"prompt": empty_image(7)}, headers=headers)
    assert response.status_code == (200 if with_key else 401), response.text
    assert response.headers.get("access-control-allow-origin") == (origin if tagged else None)


# --- /metrics after real jobs ------------------------------------------------------------------


def test_metrics_count_the_jobs_that_ran(
    client: httpx.Client, gateway: Gateway, receiver: Receiver
) -> None:
    client.headers.update(BEARER)
    before = scrape(client)
    durations_s: list[float] = []  # of the prompt jobs that succeeded, from their stats

    for color in (1, 2, 3):
        ok = client.post("/prompt", json={"prompt": empty_image(color)})
        assert ok.status_code == 200, ok.text
        durations_s.append(ok.json()["stats"]["total"] / 1000)
    failed = client.post("/prompt", json={"prompt": graph("g3_exec_error")})
    assert failed.status_code == 502, failed.text
    refused = client.post("/prompt", json={"prompt": graph("g4_validation_error")})
    assert refused.status_code == 400  # refused by ComfyUI at submission: not a job
    delivered = receiver.url("/edge-ok")
    rejected = receiver.script("/edge-rejected", 400)
    for url in (delivered, rejected):
        accepted = client.post("/prompt", json={"prompt": empty_image(4), "webhook_v2": url})
        assert accepted.status_code == 202, accepted.text
    for path in ("/edge-ok", "/edge-rejected"):
        (delivery,) = receiver.wait_for(path, 1)
        durations_s.append(delivery.json()["stats"]["total"] / 1000)
    run = client.post(
        f"/workflows/{WORKFLOW}",
        json={"input": {"prompt": "a cat", "width": 64, "height": 64, "steps": 1}},
    )
    assert run.status_code == 200, run.text

    def deliveries_counted() -> bool:
        change = delta(before, scrape(client))
        counter = "comfy_gateway_webhook_deliveries_total"
        return (
            change(counter, kind="job", outcome="delivered") == 1
            and change(counter, kind="job", outcome="failed") == 1
        )

    eventually(deliveries_counted, what="the webhook outcomes to be counted")
    after = scrape(client)
    change = delta(before, after)

    jobs = "comfy_gateway_job_duration_seconds"
    ok_labels = {"workflow": "prompt", "outcome": "succeeded"}
    assert change(f"{jobs}_count", **ok_labels) == 5
    assert change(f"{jobs}_bucket", **ok_labels, le="+Inf") == 5
    slack_s = 0.1  # the histogram's end is the record's, a moment after the stats' end
    for le in JOB_BUCKETS_S:
        in_bucket = change(f"{jobs}_bucket", **ok_labels, le=str(float(le)))
        assert sum(d <= le - slack_s for d in durations_s) <= in_bucket, le
        assert in_bucket <= sum(d <= le for d in durations_s), le
    assert sum(durations_s) <= change(f"{jobs}_sum", **ok_labels) <= sum(durations_s) + 5 * slack_s
    assert change(f"{jobs}_count", workflow="prompt", outcome="failed") == 1
    assert change("comfy_gateway_job_errors_total", workflow="prompt", code="execution_failed") == 1
    assert change(f"{jobs}_count", workflow=WORKFLOW, outcome="succeeded") == 1

    requests = "comfy_gateway_http_requests_total"
    assert change(requests, method="POST", route="/prompt", status="200") == 3
    assert change(requests, method="POST", route="/prompt", status="202") == 2
    assert change(requests, method="POST", route="/prompt", status="502") == 1
    assert change(requests, method="POST", route="/prompt", status="400") == 1
    assert change(requests, method="POST", route=f"/workflows/{WORKFLOW}", status="200") == 1
    routes = {dict(labels).get("route") for name, labels in after if name == requests}
    assert not any(r and r.startswith("/prompt/") and "{" not in r for r in routes)

    assert get(after, "comfy_gateway_queue_depth") == 0
    assert get(after, "comfy_gateway_max_queue_depth") == 4
    assert get(after, "comfy_gateway_comfyui_up", instance="0") == 1
    assert get(after, "comfy_gateway_ready") == 1
    assert get(after, "comfy_gateway_comfyui_restarts_total", instance="0") == 0
    assert get(after, "comfyui_process_resident_memory_bytes") > 100 * 2**20
    assert get(after, "comfy_gateway_build_info", version=get_version(client)) == 1


def get_version(client: httpx.Client) -> str:
    version: str = client.get("/health").json()["version"]
    return version


def test_queue_depth_follows_a_running_job(
    client: httpx.Client, gateway: Gateway, receiver: Receiver
) -> None:
    client.headers.update(BEARER)
    before = scrape(client)
    job_id = f"slow-{uuid.uuid4().hex[:8]}"
    body = {"prompt": slow_graph(seed=11), "id": job_id, "webhook_v2": receiver.url("/edge-slow")}
    assert client.post("/prompt", json=body).status_code == 202
    wait_for_comfy_queue(gateway, running=1)
    busy = scrape(client)
    assert get(busy, "comfy_gateway_queue_depth") == 1
    assert get(busy, "comfy_gateway_ready") == 1  # 1 of MAX_QUEUE_DEPTH 4
    assert client.post("/interrupt", json={"id": job_id}).status_code == 200
    (delivery,) = receiver.wait_for("/edge-slow", 1)
    assert delivery.json()["code"] == "interrupted"
    eventually(lambda: get(scrape(client), "comfy_gateway_queue_depth") == 0, what="an idle queue")
    change = delta(before, scrape(client))
    jobs = "comfy_gateway_job_duration_seconds_count"
    assert change(jobs, workflow="prompt", outcome="interrupted") == 1
    assert change("comfy_gateway_job_errors_total", workflow="prompt", code="interrupted") == 1


# --- JSON logs ---------------------------------------------------------------------------------


def log_entries(gateway: Gateway) -> list[dict[str, Any]]:
    entries = []
    for number, line in enumerate(gateway.log_text().splitlines(), start=1):
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"log line {number} is not JSON: {line!r}") from None
        assert {"time", "level", "logger", "message"} <= set(entry), line
        entries.append(entry)
    return entries


def test_logs_are_json_with_the_request_id(
    client: httpx.Client, gateway: Gateway, receiver: Receiver
) -> None:
    client.headers.update(BEARER)
    job_id = f"logged-{uuid.uuid4().hex[:8]}"
    body = {"prompt": empty_image(9), "id": job_id, "webhook_v2": receiver.url("/edge-logs")}
    assert client.post("/prompt", json=body).status_code == 202
    receiver.wait_for("/edge-logs", 1)

    def delivery_logged() -> bool:
        return any(
            "delivered" in e["message"] and job_id in e["message"] for e in log_entries(gateway)
        )

    eventually(delivery_logged, what="the delivery's log line")
    entries = log_entries(gateway)
    about_job = [e for e in entries if job_id in e["message"]]
    assert len(about_job) >= 3  # submitted, outputs read, delivered
    assert all(e.get("request_id") == job_id for e in about_job), about_job
    access = [
        e for e in entries if e["logger"] == "uvicorn.access" and e.get("request_id") == job_id
    ]
    assert [(e["method"], e["path"], e["status"]) for e in access] == [("POST", "/prompt", 202)]
    assert any(e["logger"] == "comfyui" for e in entries), "ComfyUI's own lines, as JSON too"
    for key in (KEY, OTHER):
        assert key not in gateway.log_text()


def test_cli_sends_its_api_key(gateway: Gateway, tmp_path: Any) -> None:
    from tests.integration.test_cli import cli

    graph_file = tmp_path / "g.json"
    graph_file.write_text(json.dumps(graph("g1_empty_save")))
    refused = cli("--url", gateway.url, "--graph", str(graph_file), "--out", str(tmp_path / "o"))
    assert refused.returncode == 1
    assert "HTTP 401" in refused.stderr
    done = cli("--url", gateway.url, "--graph", str(graph_file), "--out", str(tmp_path / "o"),
               "--api-key", KEY)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "o").is_dir()


@pytest.mark.parametrize("path", ["/comfy/ws", "/ws"])
async def test_comfy_websocket_needs_a_key_too(gateway: Gateway, path: str) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    url = gateway.url.replace("http", "ws", 1) + f"{path}?clientId=edge-ws"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url):
            pass
    assert refused.value.response.status_code == 401
    async with connect(url, additional_headers={"X-API-Key": KEY}) as ws:
        first = json.loads(await ws.recv())
    assert first["type"] == "status"
    assert first["data"]["sid"] == "edge-ws"


def comfy_queue(gateway: Gateway) -> tuple[list[str], list[str]]:
    queue = httpx.get(f"{gateway.comfy_url}/queue", timeout=5).json()
    return [i[1] for i in queue["queue_running"]], [i[1] for i in queue["queue_pending"]]


def test_full_passthrough_forwards_admin_endpoints_to_key_holders(
    client: httpx.Client, gateway: Gateway
) -> None:
    assert_401(client.post("/comfy/queue", json={"clear": True}))
    client.headers.update(BEARER)
    ids = []
    for seed in (31, 32):
        answer = client.post("/comfy/prompt", json={"prompt": slow_graph(seed=seed)})
        assert answer.status_code == 200, answer.text
        ids.append(answer.json()["prompt_id"])
        if seed == 31:
            eventually(lambda: comfy_queue(gateway)[0] == ids, what="the first prompt to run")
    try:
        # What COMFY_PASSTHROUGH=true refuses: clear the queue, interrupt whatever runs.
        assert client.post("/comfy/queue", json={"clear": True}).status_code == 200
        assert comfy_queue(gateway) == (ids[:1], [])
        assert client.post("/comfy/interrupt").status_code == 200
        wait_for_comfy_queue(gateway, running=0)
        assert client.post("/comfy/free", json={"free_memory": False}).status_code == 200
    finally:  # straight to ComfyUI, so that a failure leaves no prompt running for minutes
        httpx.post(f"{gateway.comfy_url}/queue", json={"clear": True})
        httpx.post(f"{gateway.comfy_url}/interrupt")
        wait_for_comfy_queue(gateway, running=0)
