"""Inpainting with a Stable Diffusion 1.5 checkpoint: repaint part of an image.

The part to repaint is the white of `mask`, or, without a mask, the transparent pixels of
`image` (what image editors export). Works with ordinary checkpoints: the latent is noised
only under the mask (`SetLatentNoiseMask`), so the rest of the image stays as it is.
"""

import random

from pydantic import BaseModel, Field

from app.workflow_types import Checkpoint, InputImage, Sampler, Scheduler


class RequestSchema(BaseModel):
    image: InputImage = Field(description="The image to repaint part of", examples=["example.png"])
    mask: InputImage | None = Field(
        None,
        description="A black and white image the size of `image`: white is repainted. "
        "Omit it to repaint the transparent pixels of `image`",
    )
    prompt: str = Field(min_length=1, description="What to paint there", examples=["a red hat"])
    negative_prompt: str = Field("", description="What to keep out of the image")
    denoise: float = Field(1.0, gt=0, le=1, description="How much the masked part may change")
    steps: int = Field(20, ge=1, le=150, description="Sampling steps")
    cfg: float = Field(7.0, ge=0, le=30, description="Classifier-free guidance scale")
    seed: int = Field(
        default_factory=lambda: random.randrange(2**32),
        ge=0,
        le=2**64 - 1,
        description="Noise seed; random when omitted (the response's `input` shows it)",
    )
    sampler_name: Sampler = Field("euler", description="Sampler")
    scheduler: Scheduler = Field("normal", description="Noise schedule")
    checkpoint: Checkpoint = Field(description="SD 1.5 checkpoint to load")


def generate_workflow(input: RequestSchema) -> dict:
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": input.checkpoint}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": input.prompt, "clip": ["1", 1]}},
        "3": {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": input.negative_prompt, "clip": ["1", 1]},
        },
        "4": {"class_type": "LoadImage", "inputs": {"image": input.image}},
        "5": {"class_type": "VAEEncode", "inputs": {"pixels": ["4", 0], "vae": ["1", 2]}},
        # LoadImage's second output is the mask of its transparent pixels.
        "6": {
            "class_type": "SetLatentNoiseMask",
            "inputs": {"samples": ["5", 0], "mask": ["4", 1]},
        },
        "7": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0],
                "positive": ["2", 0],
                "negative": ["3", 0],
                "latent_image": ["6", 0],
                "seed": input.seed,
                "steps": input.steps,
                "cfg": input.cfg,
                "sampler_name": input.sampler_name,
                "scheduler": input.scheduler,
                "denoise": input.denoise,
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
        "9": {
            "class_type": "SaveImage",
            "inputs": {"images": ["8", 0], "filename_prefix": "inpaint"},
        },
    }
    if input.mask is not None:
        graph["10"] = {
            "class_type": "LoadImageMask",
            "inputs": {"image": input.mask, "channel": "red"},
        }
        graph["6"]["inputs"]["mask"] = ["10", 0]
    return graph
