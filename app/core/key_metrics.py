"""KeyMetrics: what each API key does, for /metrics, labelled by key name.

Names are operator-given (API_KEYS, API_KEYS_FILE, ADMIN_API_KEYS), so the label set is bounded;
every unnamed key is `unnamed` (a hash of its key would give an offline guessing oracle to
whoever can read /metrics, which needs no key). Present only while API keys are on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LIMITS = ("requests_per_minute", "max_jobs")


class KeyMetrics:
    """Per key: requests answered, limits hit, jobs ended, and (at scrape) jobs now."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "comfy_gateway_key_requests",
            "HTTP requests answered that carried an accepted API key, by key name and status",
            ["key", "status"],
            registry=registry,
        )
        self._request_children: dict[tuple[str, int], Counter] = {}
        self.limited = Counter(
            "comfy_gateway_key_limited",
            "Requests refused with 429 by a key's KEY_LIMITS, by key name and limit "
            "(requests_per_minute, max_jobs)",
            ["key", "limit"],
            registry=registry,
        )
        self.jobs = Counter(
            "comfy_gateway_key_jobs",
            "Jobs that ended, by the name of the key that made them and outcome",
            ["key", "outcome"],
            registry=registry,
        )

    def request(self, key: str, status: int) -> None:
        child = self._request_children.get((key, status))
        if child is None:  # labels() costs more than inc(): look each pair up once
            child = self.requests.labels(key, str(status))
            self._request_children[(key, status)] = child
        child.inc()

    def watch(self, active: Callable[[], dict[str, int]], names: Iterable[str]) -> None:
        """Report each key's jobs queued or running at scrape time (0 for a named key idle)."""
        self.registry.register(_ActiveJobs(active, tuple(names)))
        for name in names:
            for limit in LIMITS:
                self.limited.labels(name, limit)  # present at 0, so rate() sees the first 429


class _ActiveJobs(Collector):
    def __init__(self, active: Callable[[], dict[str, int]], names: tuple[str, ...]) -> None:
        self.active = active
        self.names = names

    def collect(self) -> Iterable[Metric]:
        gauge = GaugeMetricFamily(
            "comfy_gateway_key_active_jobs",
            "Jobs queued or running now (what KEY_LIMITS max_jobs caps), by key name",
            labels=["key"],
        )
        counts = {name: 0 for name in self.names} | self.active()
        for name, count in sorted(counts.items()):
            gauge.add_metric([name], count)
        return [gauge]
