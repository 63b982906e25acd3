"""A fleet job's spec: the job as accepted, as the fleet's Redis carries it from the gateway
that accepted it to the one that runs it (app.fleet.queue, app.fleet.admit), and what it says
about the job's terminal webhooks (delivered by whoever recorded its outcome)."""

from __future__ import annotations

import json
from typing import Any

from app.core.download_auth import revealed
from app.core.keys import owner_label
from app.core.options import JobOptions
from app.core.outcome import JobOutcome
from app.jobs.webhooks import WebhookSender, deliver_job_end


def dump_options(options: JobOptions) -> dict[str, Any]:
    """A job's options as the fleet's queue carries them. Only the job's options: a request
    model that extends them carries its input too. A job's `model_credentials`, `credentials`
    and `api_key_comfy_org` travel in clear (JSON would mask them): the gateway that runs the
    job sends them to the model hosts, or its ComfyUI (docs/threat-model.md: Redis is trusted)."""
    dumped = options.model_dump(
        mode="json", by_alias=True, exclude_none=True, include=set(JobOptions.model_fields)
    )
    if options.model_credentials:
        dumped["model_credentials"] = {
            prefix: secret.get_secret_value()
            for prefix, secret in options.model_credentials.items()
        }
    if options.credentials:
        dumped["credentials"] = revealed(options.credentials)
    dumped.update(options.comfy_extra_data())
    return dumped


def spec_of(state: dict[str, str]) -> dict[str, Any]:
    """The job as accepted (id, owner, graph, options, echo_input, workflow), from its Redis
    hash."""
    spec: dict[str, Any] = json.loads(state.get("spec") or "{}")
    return spec


async def deliver_ending(sender: WebhookSender, spec: dict[str, Any], outcome: JobOutcome) -> None:
    """A job's terminal webhooks, for whoever recorded its outcome (only they deliver)."""
    options = JobOptions.model_validate(spec.get("options") or {})
    if options.webhook or options.webhook_v2:
        await deliver_job_end(
            sender,
            webhook=str(options.webhook) if options.webhook else None,
            webhook_v2=str(options.webhook_v2) if options.webhook_v2 else None,
            graph=spec["graph"],
            outcome=outcome,
            key_name=owner_label(owner) if (owner := spec.get("owner")) is not None else None,
        )
