"""Text to image with a Pony Diffusion (SDXL family) checkpoint, prompted with score tags.

Pony checkpoints are trained on booru tags and rank quality with `score_*` tags: the prompt is
prefixed with `score_9, score_8_up, score_7_up` (and `source_<source>` when given), and the
standard Pony negative prompt is used unless you give one. CLIP skip 2, as Pony expects.
"""

import random
from typing import Literal

from pydantic import BaseModel, Field

from app.workflow_types import Checkpoint, Sampler, Scheduler

QUALITY_TAGS = "score_9, score_8_up, score_7_up"
STANDARD_NEGATIVE = "score_6, score_5, score_4, worst quality, low quality, blurry, watermark, text"


class RequestSchema(BaseModel):
    prompt: str = Field(
        min_length=1,
        description="Booru tags or a description; the quality tags are added in front",
        examples=["1girl, solo, red hair, smile, outdoors, cherry blossoms"],
    )
    source: Literal["anime", "cartoon", "furry", "pony"] | None = Field(
        None, description="Adds the `source_<source>` tag: the style to lean towards"
    )
    negative_prompt: str | None = Field(
        None, description=f"What to keep out; default the standard `{STANDARD_NEGATIVE}`"
    )
    width: int = Field(1024, ge=64, le=4096, multiple_of=8, description="Image width in pixels")
    height: int = Field(1024, ge=64, le=4096, multiple_of=8, description="Image height in pixels")
    steps: int = Field(25, ge=1, le=150, description="Sampling steps")
    cfg: float = Field(7.0, ge=0, le=30, description="Classifier-free guidance scale")
    seed: int = Field(
        default_factory=lambda: random.randrange(2**32),
        ge=0,
        le=2**64 - 1,
        description="Noise seed; random when omitted (the response's `input` shows it)",
    )
    sampler_name: Sampler = Field("euler_ancestral", description="Sampler")
    scheduler: Scheduler = Field("normal", description="Noise schedule")
    checkpoint: Checkpoint = Field(
        "ponyDiffusionV6XL_v6StartWithThisOne.safetensors", description="Pony checkpoint"
    )


def generate_workflow(input: RequestSchema) -> dict:
    tags = [QUALITY_TAGS] + ([f"source_{input.source}"] if input.source else [])
    positive = ", ".join([*tags, input.prompt])
    negative = STANDARD_NEGATIVE if input.negative_prompt is None else input.negative_prompt
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": input.checkpoint}},
        "2": {
            "class_type": "CLIPSetLastLayer",
            "inputs": {"clip": ["1", 1], "stop_at_clip_layer": -2},
        },
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": positive, "clip": ["2", 0]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["2", 0]}},
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": input.width, "height": input.height, "batch_size": 1},
        },
        "6": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0],
                "positive": ["3", 0],
                "negative": ["4", 0],
                "latent_image": ["5", 0],
                "seed": input.seed,
                "steps": input.steps,
                "cfg": input.cfg,
                "sampler_name": input.sampler_name,
                "scheduler": input.scheduler,
                "denoise": 1.0,
            },
        },
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "pony"}},
    }
