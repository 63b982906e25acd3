"""Keys as tenants: admin keys, and the limits each key's requests and jobs are held to."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from app.core.limits import KeyLimit, parse_key_limits
from app.core.settings.server import checked_keys


class TenantSettings(BaseModel):
    """Tenants: each API key sees only its own jobs; admin keys see all; limits per key."""

    admin_api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (),
        description="Admin keys, a comma list of `key` or `name:key` like `API_KEYS` (and "
        "accepted like them): they see and cancel every key's jobs, and reach every ComfyUI "
        "endpoint of the passthrough (as `COMFY_PASSTHROUGH=full`)",
    )
    key_limits: Annotated[dict[str, KeyLimit], NoDecode] = Field(
        {},
        description="Limits per key name, `default` for the others (not admin keys): "
        "`requests_per_minute`, `burst`, `max_jobs` (queued or running at once), "
        "`max_downloads` (model downloads in flight); 429 with `Retry-After` past one. And "
        "`models`, what the key may do to the shared model cache: `none` (the default), "
        "`download` or `pin`; admin keys may all. `max_priority`: the highest job priority "
        "the key may give (403 above it; 0 is a limit). Inline YAML/JSON (`{default: "
        "{requests_per_minute: 120}}`), or the path of a YAML file; counted per gateway "
        "process, or fleet-wide in a fleet (QUEUE_URL; downloads: per gateway)",
    )

    @field_validator("admin_api_keys", mode="before")
    @classmethod
    def _admin_keys_valid(cls, value: Any) -> Any:
        return checked_keys(value)

    @field_validator("key_limits", mode="before")
    @classmethod
    def _limits_parsed(cls, value: Any) -> Any:
        if isinstance(value, dict) and all(isinstance(v, KeyLimit) for v in value.values()):
            return value
        return parse_key_limits(value)
