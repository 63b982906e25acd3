"""Job priority: the range a request may give, and the order every queue runs waiting jobs in.

A waiting job's effective priority is its `priority` plus one for every QUEUE_AGE_STEP_S it has
waited, so a stream of higher jobs never starves a lower one; the highest effective priority
runs first, the earlier job on a tie. Every waiting job ages at the same rate, so two waiting
jobs never change places: a job's place is fixed when it is queued, by its rank

    rank = queued_at_s / age_step_s - priority        (lower runs first)

which makes placing a job one insertion (the gateway's queue), a `number` that ComfyUI's own
queue orders by (a lone instance), and a score in a Redis sorted set (a fleet).
"""

from __future__ import annotations

PRIORITY_MIN, PRIORITY_MAX = -100, 100


def rank(priority: int, queued_at_s: float, age_step_s: float) -> float:
    """Where a job queued at queued_at_s (any clock, the same for every job compared) waits."""
    return queued_at_s / age_step_s - priority
