"""The ComfyUI the gateway starts and supervises: its command, folders, start-up and restarts."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import NoDecode

from app.core.settings.sources import empty_is_unset

PROJECT_ROOT = Path(__file__).resolve().parents[3]
# Where `make comfyui` installs the bundled ComfyUI; other versions go beside it.
BUNDLED_COMFY_DIR = PROJECT_ROOT / ".comfyui" / "0.3.75"


class ComfySettings(BaseModel):
    """ComfyUI: how it is started, where its folders are, how it is watched."""

    cmd: str | None = Field(
        None,
        description="Command that starts ComfyUI, run in `COMFY_HOME`; it must listen on "
        "`DIRECT_ADDRESS:COMFYUI_PORT_HOST` and not fork into the background. Default: "
        "the bundled CPU ComfyUI",
    )
    comfy_home: Path = Field(
        BUNDLED_COMFY_DIR / "ComfyUI",
        description="ComfyUI's folder; without `CMD`, the `venv/` beside it runs it",
    )
    comfyui_port_host: int = Field(
        8188,
        ge=1,
        le=65535,
        description="ComfyUI's port",
    )
    direct_address: str = Field(
        "127.0.0.1",
        description="Address the gateway reaches ComfyUI at",
    )
    input_dir: Path | None = Field(
        None,
        description="ComfyUI's input folder (passed to the bundled ComfyUI); default "
        "`COMFY_HOME/input`",
    )
    output_dir: Path | None = Field(
        None,
        description="ComfyUI's output folder (passed to the bundled ComfyUI); default "
        "`COMFY_HOME/output`. The gateway reads outputs from it when it can, else "
        "through `/view`",
    )
    model_dir: Path | None = Field(
        None,
        description="A models folder (`checkpoints/`, `loras/`, …) added to the bundled ComfyUI's "
        "search paths",
    )
    startup_check_interval_s: float = Field(
        1.0,
        gt=0,
        description="How often to ask ComfyUI whether it answers, at start",
    )
    startup_check_max_tries: int | None = Field(
        None,
        ge=1,
        description="Also give up starting after this many checks (the older, count-based limit)",
    )
    startup_timeout_s: float = Field(
        900.0,
        gt=0,
        description="Start-up waits while ComfyUI runs and prints, and gives up when it still does "
        "not answer after this long; every 15 s the log says what it waits for and "
        "ComfyUI's last line",
    )
    startup_silence_max_s: float = Field(
        300.0,
        gt=0,
        description="Give up starting when ComfyUI has printed nothing for this long (it may hang)",
    )
    event_silence_check_s: float = Field(
        15.0,
        gt=0,
        description="While jobs are pending and ComfyUI's event stream has been silent this long, "
        "ask ComfyUI over HTTP where they are; a stream that missed progress is "
        "reconnected",
    )
    comfyui_gpus: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="GPUs to run one ComfyUI instance on each: a comma list such as `0,1,2`; "
        "each instance gets `CUDA_VISIBLE_DEVICES` set to its GPU and its own port "
        "(COMFYUI_PORT_HOST + its index) and temp folder, and all share the models, input and "
        "output folders",
    )
    comfyui_instances: int = Field(
        1,
        ge=1,
        le=64,
        description="How many ComfyUI instances to run (on CPU, or several on one GPU that fits "
        "them); with COMFYUI_GPUS, one per GPU. A CMD of several instances names its port as "
        "`{port}` (and may use `{gpu}` and `{index}`). Several instances get `OMP_NUM_THREADS` "
        "= cores ÷ instances each, unless it is set",
    )
    recycle_after_jobs: int = Field(
        0,
        ge=0,
        description="Restart an instance after this many jobs (0: never): it takes no new job, "
        "finishes its running one, restarts while the others serve",
    )
    recycle_above_rss_mb: float = Field(
        0,
        ge=0,
        description="Restart an instance, the same way, once its ComfyUI process uses more than "
        "this much memory after a job (0: never)",
    )
    always_restart_comfyui: bool = Field(
        False,
        description="Restart ComfyUI when it exits (back-off 1 s, doubling up to "
        "`RESTART_MAX_BACKOFF_S`); when false the gateway exits with status 1",
    )
    restart_max_backoff_s: float = Field(
        30.0,
        gt=0,
        description="Longest wait between two restarts of ComfyUI",
    )
    preview_method: Literal["none", "auto", "latent2rgb", "taesd"] = Field(
        "auto",
        description="ComfyUI's `--preview-method` for sampler nodes: `auto` (TAESD when its "
        "model is in `vae_approx`, else latent2rgb, which needs no model), `latent2rgb`, "
        "`taesd`, or `none` (no previews). Given to the bundled ComfyUI; a `CMD` names it as "
        "`{preview_method}`",
    )
    preview_max_per_s: float = Field(
        4.0,
        gt=0,
        description="Most previews per second a job publishes (SSE, v2, fleet pub/sub); one "
        "arriving sooner replaces the kept one and goes out when the window opens",
    )

    @property
    def comfy_url(self) -> str:
        """The first instance's URL."""
        return self.instance_url(0)

    @property
    def instance_count(self) -> int:
        return len(self.comfyui_gpus) or self.comfyui_instances

    def instance_gpu(self, index: int) -> str | None:
        return self.comfyui_gpus[index] if self.comfyui_gpus else None

    def instance_port(self, index: int) -> int:
        return self.comfyui_port_host + index

    def instance_url(self, index: int) -> str:
        host = self.direct_address
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.instance_port(index)}"

    @property
    def comfy_input_dir(self) -> Path:
        return self.input_dir or self.comfy_home / "input"

    @property
    def comfy_output_dir(self) -> Path:
        return self.output_dir or self.comfy_home / "output"

    @field_validator(
        "cmd", "input_dir", "output_dir", "model_dir", "startup_check_max_tries", mode="before"
    )
    @classmethod
    def _comfy_empty_is_unset(cls, value: Any) -> Any:
        return empty_is_unset(value)

    @field_validator("comfyui_gpus", mode="before")
    @classmethod
    def _split_gpus(cls, value: Any) -> Any:
        if isinstance(value, str | int):
            value = [v.strip() for v in str(value).split(",") if v.strip()]
        gpus = [str(v) for v in value or ()]
        if len(set(gpus)) != len(gpus):
            raise ValueError("names a GPU twice; give each GPU once (one instance per GPU)")
        return tuple(gpus)

    @field_validator("cmd")
    @classmethod
    def _cmd_parses(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                if not shlex.split(value):
                    raise ValueError("CMD is empty")
            except ValueError as e:
                raise ValueError(f"not a valid shell command: {e}") from e
        return value
