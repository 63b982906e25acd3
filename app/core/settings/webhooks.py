"""Webhooks: delivery attempts, signing, and ComfyUI's events forwarded to the operator."""

from __future__ import annotations

import base64
import os
from typing import Annotated, Any

from pydantic import BaseModel, Field, HttpUrl, field_validator
from pydantic_settings import NoDecode

from app.core.settings.sources import empty_is_unset

SYSTEM_EVENT_TYPES = frozenset(
    {
        "status", "progress", "progress_state", "executing", "execution_start", "execution_cached",
        "executed", "execution_success", "execution_interrupted", "execution_error",
        "model.downloaded", "model.evicted", "file_downloaded", "file_uploaded", "file_deleted",
    }
)  # fmt: skip
# comfyui-api's `SALAD_*` variables (SaladCloud sets them in its containers), in the order their
# system events list them in `metadata`.
SALAD_METADATA = tuple(
    f"salad_{name}"
    for name in (
        "organization_name", "organization_id", "project_name", "project_id",
        "container_group_name", "container_group_id", "instance_id", "machine_id",
    )
)  # fmt: skip
SALAD_DESCRIPTION = (
    "Sent, when set, as `metadata.<its name in lower case>` with every system event, as "
    "comfyui-api does (SaladCloud sets it in its containers)"
)


class WebhookSettings(BaseModel):
    """Webhooks: retries, timeouts, the signing secret, and system events."""

    prompt_webhook_retries: int = Field(
        3,
        ge=1,
        le=20,
        description="Delivery attempts per webhook",
    )
    webhook_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Time one delivery attempt may take, all of it (resolving, connecting, "
        "sending, the answer's status line): a receiver that reads or answers a byte at a time is "
        "cut off there, and the attempt counts as failed",
    )
    webhook_backoff_s: float = Field(
        1.0,
        ge=0,
        description="Wait before the first retry (doubling, ±20 % jitter)",
    )
    progress_webhook_per_s: float = Field(
        2.0,
        gt=0,
        le=100,
        description="At most this many `job.progress` deliveries per second to one job's "
        "`progress_webhook` (newest wins: the ones in between are never sent)",
    )
    progress_webhook_concurrency: int = Field(
        16,
        ge=1,
        le=1000,
        description="Progress webhook deliveries in flight at once, over all jobs (each job has "
        "at most one, plus its newest event waiting); outcome webhooks never wait on them",
    )
    webhook_secret: str | None = Field(
        None,
        description="Standard Webhooks secret (base64, `whsec_` prefix allowed) that signs "
        "deliveries",
    )
    system_webhook_url: HttpUrl | None = Field(
        None,
        description="Where to send ComfyUI's events; set by the operator, so its address is not "
        "checked against `ALLOW_PRIVATE_URLS` / `ALLOWED_PRIVATE_NETWORKS`",
    )
    system_webhook_events: Annotated[frozenset[str], NoDecode] = Field(
        frozenset(),
        description="Which events to send: `all`, or a comma list (an unknown name stops start-up)",
    )
    system_meta: dict[str, str] = Field(
        default_factory=lambda: {
            k.removeprefix("SYSTEM_META_"): v
            for k, v in os.environ.items()
            if k.startswith("SYSTEM_META_") and k != "SYSTEM_META_"
        },
        description="`SYSTEM_META_<key>` variables: each is sent as `metadata.<key>` with every "
        "system event",
    )

    salad_organization_name: str | None = Field(None, description=SALAD_DESCRIPTION)
    salad_organization_id: str | None = Field(None, description=SALAD_DESCRIPTION)
    salad_project_name: str | None = Field(None, description=SALAD_DESCRIPTION)
    salad_project_id: str | None = Field(None, description=SALAD_DESCRIPTION)
    salad_container_group_name: str | None = Field(None, description=SALAD_DESCRIPTION)
    salad_container_group_id: str | None = Field(None, description=SALAD_DESCRIPTION)
    salad_instance_id: str | None = Field(None, description=SALAD_DESCRIPTION)
    salad_machine_id: str | None = Field(None, description=SALAD_DESCRIPTION)

    def system_event_metadata(self) -> dict[str, str]:
        """Every system event's `metadata`: the `SYSTEM_META_<key>` values, then each `SALAD_*`
        variable that is set as `salad_<name>`, in comfyui-api's order (event-emitters.ts)."""
        salad = {name: getattr(self, name) for name in SALAD_METADATA}
        return {**self.system_meta, **{k: v for k, v in salad.items() if v}}

    @field_validator("webhook_secret", mode="before")
    @classmethod
    def _no_secret(cls, value: Any) -> Any:
        return empty_is_unset(value)

    @field_validator("webhook_secret")
    @classmethod
    def _secret_decodes(cls, value: str | None) -> str | None:
        if value is not None:
            raw = value.removeprefix("whsec_")
            try:
                if not base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True):
                    raise ValueError
            except ValueError:
                raise ValueError("must be non-empty base64, optionally prefixed whsec_") from None
        return value

    @field_validator("system_webhook_events", mode="before")
    @classmethod
    def _known_events(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        names = set(value or ())
        if "all" in names:
            return frozenset(SYSTEM_EVENT_TYPES)
        unknown = names - SYSTEM_EVENT_TYPES
        if unknown:
            allowed = ", ".join(sorted(SYSTEM_EVENT_TYPES))
            raise ValueError(f"unknown event type(s) {sorted(unknown)}; allowed: all, {allowed}")
        return frozenset(names)
