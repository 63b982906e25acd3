"""What /metrics reads of a gateway when it is scraped: each ComfyUI instance (up, restarts,
jobs run, memory), the queue depth, readiness and the system events dropped.

The Gateway hands GatewayMetrics (app.core.metrics) a GatewayState, callbacks that read its
state; they run only at scrape time, so these gauges cost nothing between scrapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


@dataclass(frozen=True)
class InstanceReading:
    """One ComfyUI instance at scrape time."""

    index: int
    up: bool  # its process runs and its event stream is connected
    restarts: int
    pid: int | None
    version: str | None
    jobs_run: int
    rss_bytes: float | None


@dataclass
class GatewayState:
    """How to read, at scrape time, what the gateway is doing."""

    queue_depth: Callable[[], int]
    max_queue_depth: int
    ready: Callable[[], bool]
    instances: Callable[[], list[InstanceReading]]
    system_events_dropped: Callable[[], int] = lambda: 0


class StateCollector(Collector):
    """The gauges of a GatewayState, read when /metrics is scraped."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def collect(self) -> Iterable[Metric]:
        s = self.state
        info = GaugeMetricFamily(
            "comfy_gateway_comfyui_info",
            "The ComfyUI of each instance, by version (absent until it has answered)",
            labels=["instance", "version"],
        )
        up = GaugeMetricFamily(
            "comfy_gateway_comfyui_up",
            "1 while the instance's ComfyUI runs and its event stream is connected",
            labels=["instance"],
        )
        restarts = CounterMetricFamily(
            "comfy_gateway_comfyui_restarts",
            "Times the instance's ComfyUI was started again (after it exited, or recycled)",
            labels=["instance"],
        )
        jobs = CounterMetricFamily(
            "comfy_gateway_comfyui_jobs",
            "Jobs the instance ran (or began to run)",
            labels=["instance"],
        )
        rss = GaugeMetricFamily(
            "comfy_gateway_comfyui_resident_memory_bytes",
            "Resident memory of the instance's ComfyUI process",
            labels=["instance"],
        )
        for instance in s.instances():
            label = [str(instance.index)]
            if instance.version:
                info.add_metric([*label, instance.version], 1)
            up.add_metric(label, int(instance.up))
            restarts.add_metric(label, instance.restarts)
            jobs.add_metric(label, instance.jobs_run)
            if instance.rss_bytes is not None:
                rss.add_metric(label, instance.rss_bytes)
        return [
            info,
            up,
            restarts,
            jobs,
            rss,
            GaugeMetricFamily(
                "comfy_gateway_queue_depth",
                "Jobs waiting in the gateway or queued or running in ComfyUI (what "
                "MAX_QUEUE_DEPTH caps)",
                value=s.queue_depth(),
            ),
            GaugeMetricFamily(
                "comfy_gateway_max_queue_depth",
                "MAX_QUEUE_DEPTH: the queue depth at which /ready turns 503 (0: no cap)",
                value=s.max_queue_depth,
            ),
            GaugeMetricFamily(
                "comfy_gateway_ready", "1 while /ready answers 200", value=int(s.ready())
            ),
            CounterMetricFamily(
                "comfy_gateway_system_events_dropped",
                "ComfyUI events not forwarded to SYSTEM_WEBHOOK_URL because its buffer was full",
                value=s.system_events_dropped(),
            ),
        ]
