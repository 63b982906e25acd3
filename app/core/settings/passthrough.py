"""The /comfy passthrough's own connections to ComfyUI, and how long a client may take."""

from __future__ import annotations

from pydantic import BaseModel, Field


class PassthroughSettings(BaseModel):
    """The /comfy passthrough: its connections to ComfyUI (apart from the jobs') and timeouts."""

    passthrough_max_connections: int = Field(
        16,
        ge=1,
        le=1000,
        description="Connections the `/comfy` passthrough (and the facades' reads of ComfyUI's "
        "own API) may hold to ComfyUI at once, a pool apart from the jobs': no number of "
        "passthrough clients can slow a job down. A request that finds them all busy waits "
        "`PASSTHROUGH_TIMEOUT_S`, then answers 503",
    )
    passthrough_timeout_s: float = Field(
        30.0,
        gt=0,
        description="The passthrough's longest wait for each step: connecting to ComfyUI, a "
        "free connection, each write to it and each read of its answer, and the client taking "
        "each part of the answer (a client that stops reading is cut off)",
    )
    passthrough_body_timeout_s: float = Field(
        120.0,
        gt=0,
        description="How long a passthrough client may take to send its whole request body "
        "(408 past it); with `COMFY_PASSTHROUGH=true` the body is read whole before a "
        "connection to ComfyUI is taken",
    )
