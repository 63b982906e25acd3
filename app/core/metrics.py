"""GatewayMetrics: one gateway's Prometheus metrics, in a registry of its own.

Counters and histograms are updated where things happen: a request ends
(app.edge.request_metrics), a job ends, a webhook delivery ends, input or output bytes move.
Gauges read the gateway's state when `/metrics` is scraped (app.core.readings), so they cost
nothing between scrapes.
Labels are bounded: routes are templates (`/prompt/{id}`, never a raw path), workflows are the
loaded modules, outcomes and error codes are fixed sets.

Other modules hold a `MetricsHooks`, whose calls do nothing, until the Gateway hands them its
GatewayMetrics; so they can be built and tested without one.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)

from app.core.key_metrics import KeyMetrics
from app.core.keys import owner_label
from app.core.readings import GatewayState, StateCollector


class EndedJob(Protocol):
    """What the metrics read of a job that reached its outcome (app.jobs.records.JobRecord)."""

    @property
    def workflow(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def owner(self) -> str | None: ...
    @property
    def error(self) -> dict[str, Any] | None: ...
    @property
    def finished_at(self) -> float | None: ...


# From a cached 64x64 image (~10 ms) to a long video job (an hour).
JOB_BUCKETS_S = (
    0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600,
)  # fmt: skip
REQUEST_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
)  # fmt: skip
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class MetricsHooks:
    """What other modules report as it happens. This base records nothing."""

    def job_ended(self, record: EndedJob, started: float) -> None:
        """A job reached its outcome (record.status); `started` is its monotonic start."""

    def webhook_delivered(self, job_id: str, *, delivered: bool) -> None:
        """A delivery ended: accepted by the receiver, or failed after its last attempt."""

    def input_downloaded(self, n_bytes: int) -> None:
        """Input file bytes were downloaded from a URL."""

    def output_uploaded(self, n_bytes: int) -> None:
        """Output file bytes were uploaded to their destination."""

    def model_download_ended(self, n_bytes: int, *, ok: bool) -> None:
        """A model download landed, or failed; n_bytes came over the network either way."""

    def model_evicted(self) -> None:
        """A downloaded model was deleted to make room."""

    def result_cache_lookup(self, outcome: str) -> None:
        """A request asked the result cache: `hit`, `miss`, or `bypass` (not cacheable)."""

    def result_cache_size(self, n_bytes: int, entries: int) -> None:
        """The result cache now holds this much."""

    def key_limited(self, key: str, limit: str) -> None:
        """A key's KEY_LIMITS refused a request: `requests_per_minute` or `max_jobs`."""


class GatewayMetrics(MetricsHooks):
    """Every metric of one gateway, in `registry`."""

    def __init__(self, version: str) -> None:
        # `*_created` series double every counter's series and few dashboards use them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "comfy_gateway_http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.request_duration = Histogram(
            "comfy_gateway_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by method and route",
            ["method", "route"],
            buckets=REQUEST_BUCKETS_S,
            registry=r,
        )
        self.job_duration = Histogram(
            "comfy_gateway_job_duration_seconds",
            "Time from submission to ComfyUI until the outputs are read (or the job failed), "
            "by workflow (`prompt` for POST /prompt) and outcome",
            ["workflow", "outcome"],
            buckets=JOB_BUCKETS_S,
            registry=r,
        )
        self.job_errors = Counter(
            "comfy_gateway_job_errors",
            "Jobs that did not succeed, by workflow and error code (timeout, execution_failed...)",
            ["workflow", "code"],
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "comfy_gateway_webhook_deliveries",
            "Webhook deliveries that ended, by kind (job, system) and outcome (delivered, failed)",
            ["kind", "outcome"],
            registry=r,
        )
        for kind in ("job", "system"):
            for outcome in ("delivered", "failed"):
                self.webhook_deliveries.labels(kind, outcome)  # present at 0 from the start
        self.input_bytes = Counter(
            "comfy_gateway_input_download_bytes",
            "Bytes of input files downloaded from URLs",
            registry=r,
        )
        self.output_bytes = Counter(
            "comfy_gateway_output_upload_bytes",
            "Bytes of output files uploaded to their destination",
            registry=r,
        )
        self.model_downloads = Counter(
            "comfy_gateway_model_downloads",
            "Model downloads that ended, by outcome (done, failed)",
            ["outcome"],
            registry=r,
        )
        for outcome in ("done", "failed"):
            self.model_downloads.labels(outcome)
        self.model_bytes = Counter(
            "comfy_gateway_model_download_bytes",
            "Bytes of model files downloaded (resumed and failed transfers included)",
            registry=r,
        )
        self.model_evictions = Counter(
            "comfy_gateway_model_evictions",
            "Downloaded models deleted to make room for others",
            registry=r,
        )
        self.result_cache_lookups = Counter(
            "comfy_gateway_result_cache_lookups",
            "Requests that asked the result cache (RESULT_CACHE_MAX_MB), by outcome: hit, miss, "
            "bypass (a random seed or an external input: never cached)",
            ["outcome"],
            registry=r,
        )
        self.result_cache_bytes = Gauge(
            "comfy_gateway_result_cache_bytes", "Bytes the result cache holds", registry=r
        )
        self.result_cache_entries = Gauge(
            "comfy_gateway_result_cache_entries", "Results the result cache holds", registry=r
        )
        self.keys = KeyMetrics(r)
        build = Gauge("comfy_gateway_build_info", "The gateway's version", ["version"], registry=r)
        build.labels(version).set(1)
        ProcessCollector(registry=r)  # process_*: the gateway's CPU, memory, file descriptors

    def watch(self, state: GatewayState) -> None:
        """Report the gateway's state, and its ComfyUI child's resources, on every scrape."""
        self.registry.register(StateCollector(state))

        def first_pid() -> int | str:  # comfyui_process_*: the first instance's, as always
            instances = state.instances()
            return (instances[0].pid if instances else None) or "none"

        ProcessCollector(namespace="comfyui", pid=first_pid, registry=self.registry)

    def job_ended(self, record: EndedJob, started: float) -> None:
        ended = record.finished_at if record.finished_at is not None else time.monotonic()
        self.job_duration.labels(record.workflow, record.status).observe(ended - started)
        if record.status != "succeeded":
            code = str((record.error or {}).get("code", "unknown"))
            self.job_errors.labels(record.workflow, code).inc()
        if record.owner is not None:
            self.keys.jobs.labels(owner_label(record.owner), record.status).inc()

    def webhook_delivered(self, job_id: str, *, delivered: bool) -> None:
        kind = "system" if job_id == "system" else "job"
        self.webhook_deliveries.labels(kind, "delivered" if delivered else "failed").inc()

    def input_downloaded(self, n_bytes: int) -> None:
        self.input_bytes.inc(n_bytes)

    def output_uploaded(self, n_bytes: int) -> None:
        self.output_bytes.inc(n_bytes)

    def model_download_ended(self, n_bytes: int, *, ok: bool) -> None:
        self.model_downloads.labels("done" if ok else "failed").inc()
        self.model_bytes.inc(n_bytes)

    def model_evicted(self) -> None:
        self.model_evictions.inc()

    def result_cache_lookup(self, outcome: str) -> None:
        self.result_cache_lookups.labels(outcome).inc()

    def result_cache_size(self, n_bytes: int, entries: int) -> None:
        self.result_cache_bytes.set(n_bytes)
        self.result_cache_entries.set(entries)

    def key_limited(self, key: str, limit: str) -> None:
        self.keys.limited.labels(key, limit).inc()

    def request_ended(
        self, method: str, route: str, status: int, duration_s: float, api_key: str | None = None
    ) -> None:
        """A request was answered; `api_key`: the metrics label of the API key it carried."""
        if api_key is not None:
            self.keys.request(api_key, status)
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:  # labels() costs more than the update itself: look it up once
            method = method if method in METHODS else "other"
            children = (
                self.requests.labels(method, route, str(status)),
                self.request_duration.labels(method, route),
            )
            if len(self._request_children) < 10_000:  # labels are bounded; this map is too
                self._request_children[key] = children
        children[0].inc()
        children[1].observe(duration_s)
