"""Prometheus metrics: requests by route template, jobs, webhooks, gateway state, /metrics."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.core.errors import GatewayError, Interrupted
from app.core.metrics import JOB_BUCKETS_S, GatewayMetrics
from app.core.outcome import JobOutcome
from app.core.readings import GatewayState, InstanceReading
from app.core.settings import load_settings
from app.edge.request_metrics import RequestMetrics
from app.gateway import Gateway
from app.jobs.records import JobRecord
from app.jobs.webhooks import WebhookSender
from app.main import create_app

KEY = "k3y-0123456789abcdef"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(metrics: GatewayMetrics) -> Samples:
    return samples(generate_latest(metrics.registry).decode())


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def test_each_gateway_has_its_own_registry() -> None:
    first, second = GatewayMetrics("1"), GatewayMetrics("2")
    first.input_downloaded(100)
    first.output_uploaded(7)
    assert value(scrape(first), "comfy_gateway_input_download_bytes_total") == 100
    assert value(scrape(first), "comfy_gateway_output_upload_bytes_total") == 7
    assert value(scrape(second), "comfy_gateway_input_download_bytes_total") == 0
    assert value(scrape(second), "comfy_gateway_build_info", version="2") == 1
    assert not any(name.endswith("_created") for name, _ in scrape(first))


# --- requests --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_app() -> FastAPI:
    app = create_app(load_settings(api_keys=KEY, max_body_size_mb=0.001))

    @app.get("/crash")
    async def crash() -> None:
        raise RuntimeError("boom")

    return app


@pytest.fixture
async def client(keyed_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=keyed_app, raise_app_exceptions=False)
    headers = {"X-API-Key": KEY}
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as c:
        yield c


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "route", "status"),
    [
        ("GET", "/health", {}, "/health", "503"),  # the gateway was never started
        ("GET", "/prompt/some-job-id", {}, "/prompt/{id}", "404"),
        ("GET", "/prompt/another-id/events", {}, "/prompt/{id}/events", "404"),
        ("GET", "/no/such/route/a1b2", {}, "unmatched", "404"),
        ("GET", "/prompt", {}, "/prompt", "405"),
        ("POST", "/prompt", {"json": {}}, "/prompt", "400"),
        ("POST", "/prompt", {"headers": {"X-API-Key": "nope"}}, "/prompt", "401"),
        ("POST", "/interrupt", {"headers": {"X-API-Key": ""}}, "/interrupt", "401"),
        ("POST", "/prompt", {"content": b"x" * 5000}, "/prompt", "413"),
        ("GET", "/crash", {}, "/crash", "500"),
        ("BREW", "/prompt", {}, "/prompt", "405"),
    ],
    ids=["probe", "template", "nested-template", "unmatched", "405", "400", "401-wrong",
         "401-missing", "413-before-routing", "500", "odd-method"],
)  # fmt: skip
async def test_requests_are_counted_by_route_template(
    keyed_app: FastAPI,
    client: httpx.AsyncClient,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    route: str,
    status: str,
) -> None:
    metrics: GatewayMetrics = keyed_app.state.gateway.metrics
    labels = {"method": method if method != "BREW" else "other", "route": route}
    before = scrape(metrics)
    response = await client.request(method, path, **kwargs)
    assert str(response.status_code) == status
    after = scrape(metrics)
    counter = "comfy_gateway_http_requests_total"
    assert (value(after, counter, **labels, status=status) or 0) - (
        value(before, counter, **labels, status=status) or 0
    ) == 1
    count = "comfy_gateway_http_request_duration_seconds_count"
    assert (value(after, count, **labels) or 0) - (value(before, count, **labels) or 0) == 1
    assert not any(path in dict(lbl).get("route", "") for _, lbl in after if path != route)


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [("/api/v2/things/7", {}, 200), ("/api/v2/things/7", {"X-API-Key": "no"}, 401)],
    ids=["routed", "refused-before-routing"],
)
async def test_included_router_prefixes_are_in_the_template(
    path: str, headers: dict[str, str], status: int
) -> None:
    from app.edge.api_keys import ApiKeys
    from app.edge.auth import ApiKeyAuth

    metrics = GatewayMetrics("t")
    app = FastAPI()
    router = APIRouter(prefix="/v2")

    @router.get("/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    app.include_router(router, prefix="/api")
    app.add_middleware(ApiKeyAuth, keys=ApiKeys([KEY]))
    app.add_middleware(RequestMetrics, metrics=metrics)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        response = await c.get(path, headers=headers or {"X-API-Key": KEY})
    assert response.status_code == status
    found = scrape(metrics)
    labels = {"method": "GET", "route": "/api/v2/things/{thing_id}", "status": str(status)}
    assert value(found, "comfy_gateway_http_requests_total", **labels) == 1


async def test_request_duration_lands_in_the_right_bucket() -> None:
    metrics = GatewayMetrics("t")
    app = FastAPI()

    @app.get("/slow")
    async def slow() -> dict[str, bool]:
        time.sleep(0.03)  # noqa: ASYNC251 - a deliberate, measurable stall
        return {"ok": True}

    app.add_middleware(RequestMetrics, metrics=metrics)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        await c.get("/slow")
    found = scrape(metrics)
    bucket = "comfy_gateway_http_request_duration_seconds_bucket"
    labels = {"method": "GET", "route": "/slow"}
    assert value(found, bucket, **labels, le="0.025") == 0
    assert value(found, bucket, **labels, le="0.05") == 1
    assert value(found, bucket, **labels, le="+Inf") == 1


# --- jobs, webhooks, bytes ---------------------------------------------------------------------


def finished(workflow: str, status: str, duration_s: float, code: str | None = None) -> JobRecord:
    record = JobRecord(f"job-{time.monotonic_ns()}", "p", workflow)
    if status == "succeeded":
        record.end(JobOutcome(record.id, {}))
    else:
        kind = Interrupted if status == "interrupted" else GatewayError
        error = type("Failure", (kind,), {"code": code or kind.code})("x")
        record.end(JobOutcome.failed(record.id, {}, error))
    assert record.finished_at is not None
    record.finished_at = time.monotonic()
    return record


def test_job_durations_by_workflow_and_outcome() -> None:
    metrics = GatewayMetrics("t")
    now = time.monotonic()
    jobs = [
        ("prompt", "succeeded", 0.04, None),
        ("prompt", "succeeded", 0.3, None),
        ("prompt", "succeeded", 7.0, None),
        ("prompt", "failed", 0.2, "execution_failed"),
        ("sd15/txt2img", "failed", 65.0, "timeout"),
        ("sd15/txt2img", "interrupted", 1.5, "interrupted"),
    ]
    for workflow, status, duration_s, code in jobs:
        record = finished(workflow, status, duration_s, code)
        record.finished_at = now
        metrics.job_ended(record, now - duration_s)
    found = scrape(metrics)
    h = "comfy_gateway_job_duration_seconds"
    ok = {"workflow": "prompt", "outcome": "succeeded"}
    assert value(found, f"{h}_count", **ok) == 3
    assert value(found, f"{h}_sum", **ok) == pytest.approx(7.34)
    for le in JOB_BUCKETS_S:
        expected = sum(1 for _, s, d, _ in jobs if s == "succeeded" and d <= le)
        assert value(found, f"{h}_bucket", **ok, le=str(float(le))) == expected, le
    assert value(found, f"{h}_bucket", **ok, le="+Inf") == 3
    slow = {"workflow": "sd15/txt2img", "outcome": "failed"}
    assert value(found, f"{h}_bucket", **slow, le="60.0") == 0
    assert value(found, f"{h}_bucket", **slow, le="120.0") == 1
    errors = "comfy_gateway_job_errors_total"
    assert value(found, errors, workflow="prompt", code="execution_failed") == 1
    assert value(found, errors, workflow="sd15/txt2img", code="timeout") == 1
    assert value(found, errors, workflow="sd15/txt2img", code="interrupted") == 1
    assert not any(name == errors and ("code", "None") in lbl for name, lbl in found)


@pytest.mark.parametrize(
    ("answers", "job_id", "kind", "outcome"),
    [
        ([200], "job-1", "job", "delivered"),
        ([503, 204], "job-1", "job", "delivered"),
        ([400], "job-1", "job", "failed"),
        ([500, 500], "job-1", "job", "failed"),
        ([200], "system", "system", "delivered"),
    ],
    ids=["ok", "retried", "refused", "exhausted", "system"],
)
async def test_webhook_deliveries_by_outcome(
    answers: list[int], job_id: str, kind: str, outcome: str
) -> None:
    metrics = GatewayMetrics("t")
    settings = load_settings(
        prompt_webhook_retries=2, webhook_backoff_s=0, allowed_private_networks="127.0.0.1/32"
    )
    sender = WebhookSender(settings)
    sender.metrics = metrics
    statuses = iter(answers)
    await sender.http.aclose()
    sender.http = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda request: httpx.Response(next(statuses)))
    )
    await sender.deliver("http://127.0.0.1/hook", {"type": "t"}, msg_id="m", job_id=job_id)
    await sender.aclose()
    found = scrape(metrics)
    counter = "comfy_gateway_webhook_deliveries_total"
    assert value(found, counter, kind=kind, outcome=outcome) == 1
    other = "failed" if outcome == "delivered" else "delivered"
    assert value(found, counter, kind=kind, outcome=other) == 0


# --- state read at scrape time ---------------------------------------------------------------


def test_state_is_read_on_every_scrape() -> None:
    metrics = GatewayMetrics("t")
    state: dict[str, Any] = {"depth": 0, "up": False, "restarts": 0, "dropped": 0, "pid": None}

    def instances() -> list[InstanceReading]:
        first = InstanceReading(
            index=0, up=state["up"], restarts=state["restarts"], pid=state["pid"],
            version=state.get("version"), jobs_run=state["restarts"] * 10, rss_bytes=None,
        )  # fmt: skip
        second = InstanceReading(1, False, 0, None, None, 0, 2.0**30)
        return [first, second]

    metrics.watch(
        GatewayState(
            queue_depth=lambda: int(state["depth"] or 0),
            max_queue_depth=4,
            ready=lambda: bool(state["up"]) and int(state["depth"] or 0) < 4,
            instances=instances,
            system_events_dropped=lambda: int(state["dropped"] or 0),
        )
    )
    found = scrape(metrics)
    assert not any(name == "comfy_gateway_comfyui_info" for name, _ in found)
    assert value(found, "comfy_gateway_comfyui_up", instance="0") == 0
    assert value(found, "comfy_gateway_ready") == 0
    assert not any(name.startswith("comfyui_process_") for name, _ in found)
    state.update(depth=3, up=True, restarts=2, dropped=5, pid=os.getpid(), version="0.33.0")
    found = scrape(metrics)
    assert value(found, "comfy_gateway_comfyui_info", instance="0", version="0.33.0") == 1
    assert value(found, "comfy_gateway_queue_depth") == 3
    assert value(found, "comfy_gateway_max_queue_depth") == 4
    assert value(found, "comfy_gateway_comfyui_up", instance="0") == 1
    assert value(found, "comfy_gateway_comfyui_up", instance="1") == 0
    assert value(found, "comfy_gateway_ready") == 1
    assert value(found, "comfy_gateway_comfyui_restarts_total", instance="0") == 2
    assert value(found, "comfy_gateway_comfyui_jobs_total", instance="0") == 20
    assert value(found, "comfy_gateway_comfyui_resident_memory_bytes", instance="1") == 2**30
    assert value(found, "comfy_gateway_system_events_dropped_total") == 5
    rss = value(found, "comfyui_process_resident_memory_bytes")  # the first instance's process
    assert rss is not None and rss > 10 * 2**20
    assert value(found, "process_resident_memory_bytes") == pytest.approx(rss, rel=0.5)


async def test_a_gateway_reports_its_own_state() -> None:
    gateway = Gateway(load_settings(max_queue_depth=3, comfyui_instances=2))
    try:
        found = scrape(gateway.metrics)
        assert value(found, "comfy_gateway_queue_depth") == 0
        assert value(found, "comfy_gateway_max_queue_depth") == 3
        for index in ("0", "1"):  # never started
            assert value(found, "comfy_gateway_comfyui_up", instance=index) == 0
        assert value(found, "comfy_gateway_ready") == 0
        gateway.pool.instances[1].process.restarts = 2
        found = scrape(gateway.metrics)
        assert value(found, "comfy_gateway_comfyui_restarts_total", instance="1") == 2
        assert value(found, "comfy_gateway_comfyui_restarts_total", instance="0") == 0
        assert gateway.jobs.metrics is gateway.metrics
        assert gateway.webhooks.metrics is gateway.metrics
    finally:
        for instance in gateway.pool.instances:
            await instance.client.aclose()
        await gateway.webhooks.aclose()


# --- GET /metrics ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        ("", "text/plain; version=0.0.4; charset=utf-8"),
        ("application/openmetrics-text; version=1.0.0", "application/openmetrics-text"),
    ],
    ids=["prometheus-text", "openmetrics"],
)
async def test_metrics_endpoint(client: httpx.AsyncClient, accept: str, content_type: str) -> None:
    response = await client.get("/metrics", headers={"Accept": accept, "X-API-Key": ""})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(content_type)
    assert "comfy_gateway_queue_depth" in response.text
    if not accept:
        names = {family.name for family in text_string_to_metric_families(response.text)}
        assert {
            "comfy_gateway_http_requests",
            "comfy_gateway_job_duration_seconds",
            "comfy_gateway_queue_depth",
            "comfy_gateway_comfyui_up",
            "comfy_gateway_comfyui_restarts",
            "comfy_gateway_webhook_deliveries",
            "comfy_gateway_input_download_bytes",
            "comfy_gateway_output_upload_bytes",
        } <= names
