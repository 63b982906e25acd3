"""Whether a job pulled from the fleet's stream starts on this gateway: the checks before the
worker (app.fleet.worker) hands it to the job runner.

A pulled job does not start when it ended already, expired, or the message is not its current
generation (it is acknowledged; one whose gateway stopped between recording the outcome and
the webhooks has them delivered again), when gateways that stopped have started it
JOB_MAX_ATTEMPTS times (it ends failed), or when another gateway took the message over
meanwhile. Otherwise its start is counted in Redis; a takeover says so in the job's events.
A job pulled from the waiting set comes with its hash and, when these checks held, its start
made in the pull's own script (app.fleet.order.PULL): then nothing here asks Redis again.
"""

from __future__ import annotations

import logging
from typing import Any

from app.core.errors import ComfyUnavailable
from app.fleet.outcomes import Outcomes
from app.fleet.spec import spec_of
from app.fleet.store import FleetStore
from app.fleet.stream import NOT_HELD, NOTHING_TO_START, Pulled
from app.jobs.records import JobEvent

log = logging.getLogger(__name__)


async def admit(
    store: FleetStore, outcomes: Outcomes, pulled: Pulled, consumer: str, max_attempts: int
) -> dict[str, Any] | None:
    """The job's spec when it starts here (its start counted), else None (settled or left to
    the gateway that holds it). Redis errors are raised: the job stays pending."""
    state = pulled.state if pulled.state is not None else await store.state(pulled.key)
    current = state.get("msg", pulled.message_id) == pulled.message_id
    if not state or "done" in state or not current:  # ended, expired, or not its generation
        if current and pulled.reclaimed and "done" in state and "delivered" not in state:
            # Its gateway stopped between recording the outcome and the webhooks.
            await outcomes.redeliver(pulled.key, state)
        await outcomes.ack(pulled)
        return None
    spec = pulled.spec if pulled.spec is not None else spec_of(state)
    started = int(state.get("attempts") or 0)
    if started >= max_attempts:
        lost = ComfyUnavailable(
            f"the job was started {started} time(s) by gateways that stopped before it ended "
            f"(JOB_MAX_ATTEMPTS={max_attempts})"
        )
        await outcomes.end_unstarted(pulled, spec, lost)
        return None
    # A pull started the job already, in its script, when the checks above held there.
    attempt = pulled.started or await store.start(pulled, consumer)
    if attempt == NOT_HELD:
        return None  # another gateway took the message over meanwhile: it is that one's now
    if attempt == NOTHING_TO_START:
        await outcomes.ack(pulled)  # interrupted (or replaced) meanwhile
        return None
    if attempt > 1:
        log.warning("job %s: taken over from a gateway that stopped (start %d of at most %d)",
                    spec["id"], attempt, max_attempts)  # fmt: skip
        queued = JobEvent(0, "queued", {"id": spec["id"], "attempt": attempt})
        await store.append_all(pulled, consumer, [(queued, "queued", None)])
    return spec
