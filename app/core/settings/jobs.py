"""Jobs: how many may wait, how long one may run, what is kept, which workflows exist."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator

from app.core.settings.comfyui import PROJECT_ROOT
from app.core.settings.sources import empty_is_unset


class JobSettings(BaseModel):
    """Jobs: queue cap, time limit, outputs and history kept, workflow modules, warmup."""

    max_queue_depth: int = Field(
        0,
        ge=0,
        description="Refuse new jobs with 429 and report not ready at this many queued and running "
        "jobs (0: no cap)",
    )
    queue_age_step_s: float = Field(
        30.0,
        gt=0,
        description="A waiting job gains 1 priority per this many seconds waited, so a stream "
        "of higher-priority jobs never starves it (also across a fleet)",
    )
    job_retries: int = Field(
        1,
        ge=0,
        le=10,
        description="Times a job whose ComfyUI instance died under it is run again, on another "
        "instance, before it fails",
    )
    prompt_timeout_s: float | None = Field(
        None,
        gt=0,
        description="Longest a job may take before it is interrupted (504)",
    )
    keep_outputs: bool = Field(
        False,
        description="Keep output files after they are returned",
    )
    output_spool_dir: Path | None = Field(
        None,
        description="Where finished outputs over 1 MiB wait on disk until their answers have "
        "gone out (each gateway process makes a folder of its own in it). Unset: the system's "
        "temporary folder. On the output folder's filesystem they are moved, not copied; never "
        "on a tmpfs, whose files take memory",
    )
    job_history_max: int = Field(
        100,
        ge=0,
        description="Finished jobs kept for `GET /prompt/{id}` and its events",
    )
    job_history_ttl_s: float = Field(
        3600,
        ge=0,
        description="How long a finished job is kept",
    )
    job_history_max_mb: float = Field(
        4096.0,
        ge=0,
        description="What the kept results' files may take, in memory (up to 1 MiB each) or, "
        "mostly, on disk in the spool (`OUTPUT_SPOOL_DIR`); the oldest go first, never the "
        "newest",
    )
    workflow_dir: Path = Field(
        PROJECT_ROOT / "workflows",
        description="The workflow modules; a module that fails to load stops start-up (exit 2) "
        "naming it",
    )
    warmup_prompt_file: Path | None = Field(
        None,
        description='An API-format graph (or `{"prompt": graph}`) run once before `/health` turns '
        "200; if it fails, start-up fails (exit 1) with the reason. Its "
        "`CheckpointLoaderSimple` checkpoint is the workflows' default checkpoint",
    )

    warmup_prompt_url: str | None = Field(
        None,
        description="comfyui-api's: a URL of the warmup graph, fetched once at start-up (with "
        "the operator's credentials only where their prefixes cover it); a failure stops "
        "start-up. Ignored when `WARMUP_PROMPT_FILE` is set",
    )

    @field_validator("prompt_timeout_s", "warmup_prompt_file", "warmup_prompt_url", mode="before")
    @classmethod
    def _job_empty_is_unset(cls, value: Any) -> Any:
        return empty_is_unset(value)

    @field_validator("warmup_prompt_file")
    @classmethod
    def _warmup_readable(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                data = json.loads(value.read_text())
            except OSError as e:
                raise ValueError(f"cannot be read: {e.strerror or e}") from None
            except ValueError as e:
                raise ValueError(f"is not JSON: {e}") from None
            if not isinstance(data, dict) or not data:
                raise ValueError("must hold a ComfyUI API-format graph (a JSON object of nodes)")
        return value
