"""A fleet: many gateways sharing one durable job queue on Redis Streams."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, SecretStr, field_validator

from app.core.settings.sources import empty_is_unset


class FleetSettings(BaseModel):
    """A fleet: gateways on many machines sharing one job queue on Redis (QUEUE_URL)."""

    queue_url: SecretStr | None = Field(
        None,
        description="Redis to share jobs through, e.g. `redis://:password@redis:6379/0` "
        "(`rediss://` for TLS). Set, every gateway with it accepts jobs into one queue and runs "
        "them when it has a free ComfyUI; unset, each gateway keeps its own jobs",
    )
    queue_name: str = Field(
        "comfy-gateway",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="Prefix of the fleet's Redis keys: fleets with different names can share "
        "one Redis",
    )
    job_visibility_timeout_s: float = Field(
        60.0,
        ge=3,
        description="A job whose gateway stopped heartbeating this long (killed, machine gone) "
        "is taken over by another gateway",
    )
    job_max_attempts: int = Field(
        3,
        ge=1,
        le=20,
        description="Gateways a job may be started on before it fails (each one that died "
        "under it counts)",
    )
    queue_timeout_s: float = Field(
        3.0,
        ge=0.5,
        le=60,
        description="Longest one call to Redis may take (connect, send, answer): past it Redis "
        "counts as out of reach (a partition, a paused VM): new jobs get 503 with `Retry-After` "
        "and `/ready` says why, while running jobs' events and outcomes wait for it",
    )
    fleet_history_max: int = Field(
        10_000,
        ge=1,
        description="Finished jobs Redis keeps (each for `JOB_HISTORY_TTL_S` at most); past it "
        "the oldest finished one is dropped first and reads of it answer 404 as an expired one "
        "does. A queued or running job is never dropped",
    )
    fleet_history_max_mb: float = Field(
        1024.0,
        gt=0,
        description="Bytes the finished jobs Redis keeps may take (each one's request and "
        "result); past it the oldest finished one is dropped first, as with `FLEET_HISTORY_MAX`",
    )
    fleet_secret: SecretStr | None = Field(
        None,
        description="Shared by the fleet's gateways: one fetches a job's output files from the "
        "gateway that ran it (`/internal/fleet/files/`, refused without it), at least 16 "
        "characters. Unset: the gateways share one generated in Redis (`<QUEUE_NAME>:secret`), "
        "as whoever reaches the fleet's Redis is trusted with its jobs anyway",
    )
    fleet_advertise_url: str | None = Field(
        None,
        description="Where the fleet's other gateways reach this one for the outputs of the "
        "jobs it ran, e.g. `http://10.0.3.7:3000`. Unset: `http://<this host's address>:<PORT>` "
        "(HOST when it names one address, else the address this machine's name resolves to)",
    )
    fleet_max_result_mb: float | None = Field(
        None,
        description="Deprecated and ignored (a warning at start-up): a job's outputs no longer "
        "travel through Redis, which holds only where to fetch them, so no size bounds them",
    )

    @field_validator("fleet_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @field_validator("fleet_advertise_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("queue_url", "fleet_secret", "fleet_advertise_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return empty_is_unset(value)

    @field_validator("queue_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value
