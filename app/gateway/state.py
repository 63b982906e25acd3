"""What /metrics reads of a Gateway when it is scraped."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.core.metrics import GatewayState, InstanceReading

if TYPE_CHECKING:
    from app.gateway.gateway import Gateway


def gateway_state(gateway: Gateway) -> GatewayState:
    """The callbacks that read a Gateway's state."""

    def instances() -> list[InstanceReading]:
        readings = []
        for i in gateway.pool.instances:
            proc, running = i.process.proc, i.process.running
            rss_mb = i.rss_mb()
            readings.append(
                InstanceReading(
                    index=i.index,
                    up=running and i.tracker.connected.is_set(),
                    restarts=i.process.restarts,
                    pid=proc.pid if proc and running else None,
                    version=i.client.version,
                    jobs_run=i.jobs_run,
                    rss_bytes=None if rss_mb is None else rss_mb * 2**20,
                )
            )
        return readings

    return GatewayState(
        queue_depth=lambda: gateway.queue_depth,
        max_queue_depth=gateway.settings.max_queue_depth,
        ready=lambda: gateway.not_ready_reason() is None,
        instances=instances,
        system_events_dropped=lambda: gateway.system_events.dropped if gateway.system_events else 0,
    )
