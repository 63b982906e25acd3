"""Which node inputs name a model file, and in which of ComfyUI's model folders it lives.

ComfyUI's loaders take a file name from one model folder (`CheckpointLoaderSimple.ckpt_name`
from `checkpoints`). Most inputs say by their name which folder (`lora_name` is a LoRA wherever
it appears, custom nodes included); a few names are shared by loaders of different folders
(`model_name`, `clip_name`, `name`), and for those the node class decides.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from app.core.downloads import is_model_url

__all__ = ["is_model_url", "model_folder", "model_inputs"]

# Input name -> model folder, for every class that has no entry below.
BY_INPUT = {
    "ckpt_name": "checkpoints",
    "lora_name": "loras",
    "vae_name": "vae",
    "unet_name": "diffusion_models",
    "clip_name": "text_encoders",
    "clip_name1": "text_encoders",
    "clip_name2": "text_encoders",
    "clip_name3": "text_encoders",
    "clip_name4": "text_encoders",
    "control_net_name": "controlnet",
    "style_model_name": "style_models",
    "gligen_name": "gligen",
    "hypernetwork_name": "hypernetworks",
    "photomaker_model_name": "photomaker",
    "audio_encoder_name": "audio_encoders",
}
# (class_type, input name) -> model folder, where the input's name alone would mislead.
BY_CLASS = {
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("LatentUpscaleModelLoader", "model_name"): "latent_upscale_models",
    ("ModelPatchLoader", "name"): "model_patches",
}


def model_folder(class_type: str, input_name: str) -> str | None:
    """The model folder a node input names a file of, or None when it names none."""
    return BY_CLASS.get((class_type, input_name)) or BY_INPUT.get(input_name)


def model_inputs(graph: dict[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    """(node id, input name, folder, value) of every model-file input holding a string."""
    for node_id, node in graph.items():
        if not isinstance(node, dict):
            continue
        class_type, inputs = node.get("class_type"), node.get("inputs")
        if not isinstance(class_type, str) or not isinstance(inputs, dict):
            continue
        for name, value in inputs.items():
            folder = model_folder(class_type, name)
            if folder is not None and isinstance(value, str):
                yield node_id, name, folder, value
