"""The plugin API: what a workflow module imports from the gateway, and all it may.

    from app.workflow_types import Checkpoint, Lora, Sampler, Scheduler

A workflow module (docs/workflows.md) imports only this module, pydantic and the standard
library (`make check` runs scripts/check_workflow_imports.py over workflows/). The names below
are the public, stable ones; where they are implemented (app.registry.fields, which the
registry reads) may change without a workflow module noticing.

- Checkpoint, Lora, Vae, DiffusionModel, TextEncoder, UpscaleModel: a file of that ComfyUI
  model folder (an enum of what the running ComfyUI lists), or a URL the gateway downloads.
- Sampler, Scheduler: a `KSampler` choice of the running ComfyUI.
- InputImage: an image input (a URL, base64, or a file in ComfyUI's input folder).
- ComfyChoice: the marker behind them all, for a choice of another model folder or node input:
  `Annotated[str, ComfyChoice("style", node="MyNode", input="style")]`.
"""

from app.registry.fields import (
    Checkpoint,
    ComfyChoice,
    DiffusionModel,
    InputImage,
    Lora,
    Sampler,
    Scheduler,
    TextEncoder,
    UpscaleModel,
    Vae,
)

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
