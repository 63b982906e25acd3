"""Field types for workflow modules whose valid values come from the running ComfyUI; workflow
modules import them from app.workflow_types, the plugin API, never from here.

A workflow module annotates a field with one of these instead of `str`:

    from app.workflow_types import Checkpoint, Sampler, Scheduler

    class RequestSchema(BaseModel):
        checkpoint: Checkpoint = Field(description="The checkpoint to load")
        sampler_name: Sampler = "euler"
        scheduler: Scheduler = "normal"

At start-up, once ComfyUI answers, the registry replaces each such field with an enum of the
values ComfyUI reports (model files from its model listing, samplers and schedulers from
`/object_info`). So Swagger lists them, and a request naming a file that is not installed is a
400 that lists the ones that are. A `Checkpoint` field without a default gets the gateway's
default checkpoint: the one the warmup prompt loads, else the first installed. Any other such
field without a default is required. The types nest: `list[Lora]`, or a `Lora` field inside a
model used in a list, work too.

`InputImage` is a plain string documented as what the gateway accepts for an image input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import Field


@dataclass(frozen=True)
class ComfyChoice:
    """Marks a `str` whose allowed values the running ComfyUI reports.

    Either `folder` (a model folder, as listed by ComfyUI's `/models/<folder>`) or `node` and
    `input` (a combo input of a node class in `/object_info`) name where the values come from.
    `kind` names the thing in messages ("checkpoint x not found").
    """

    kind: str
    folder: str | None = None
    node: str | None = None
    input: str | None = None

    def __post_init__(self) -> None:
        if (self.folder is None) == (self.node is None or self.input is None):
            raise ValueError("a ComfyChoice names either a model folder, or a node and input")

    @property
    def source(self) -> str:
        """Where the values come from, for people."""
        if self.folder is not None:
            return f"ComfyUI's models/{self.folder}"
        return f"ComfyUI's {self.node}.{self.input}"


__all__ = [
    "Checkpoint",
    "ComfyChoice",
    "DiffusionModel",
    "InputImage",
    "Lora",
    "Sampler",
    "Scheduler",
    "TextEncoder",
    "UpscaleModel",
    "Vae",
]

Checkpoint = Annotated[str, ComfyChoice("checkpoint", folder="checkpoints")]
Lora = Annotated[str, ComfyChoice("LoRA", folder="loras")]
Vae = Annotated[str, ComfyChoice("VAE", folder="vae")]
DiffusionModel = Annotated[str, ComfyChoice("diffusion model", folder="diffusion_models")]
TextEncoder = Annotated[str, ComfyChoice("text encoder", folder="text_encoders")]
UpscaleModel = Annotated[str, ComfyChoice("upscale model", folder="upscale_models")]
Sampler = Annotated[str, ComfyChoice("sampler", node="KSampler", input="sampler_name")]
Scheduler = Annotated[str, ComfyChoice("scheduler", node="KSampler", input="scheduler")]

InputImage = Annotated[
    str,
    Field(
        min_length=1,
        description="An image: an http(s) URL, base64 (a `data:` prefix is optional), or the "
        "name of a file in ComfyUI's input folder",
    ),
]
