"""Text to image with a Stable Diffusion 1.5 checkpoint.

Encodes the prompt and the negative prompt, samples an empty latent of the requested size and
decodes it: the graph ComfyUI's default workflow builds.
"""

import random

from pydantic import BaseModel, Field

from app.workflow_types import Checkpoint, Sampler, Scheduler


class RequestSchema(BaseModel):
    prompt: str = Field(min_length=1, description="What to draw", examples=["a photo of a cat"])
    negative_prompt: str = Field("", description="What to keep out of the image")
    width: int = Field(512, ge=64, le=2048, multiple_of=8, description="Image width in pixels")
    height: int = Field(512, ge=64, le=2048, multiple_of=8, description="Image height in pixels")
    batch_size: int = Field(1, ge=1, le=8, description="How many images to make")
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
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": input.checkpoint}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": input.prompt, "clip": ["1", 1]}},
        "3": {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": input.negative_prompt, "clip": ["1", 1]},
        },
        "4": {
            "class_type": "EmptyLatentImage",
            "inputs": {
                "width": input.width,
                "height": input.height,
                "batch_size": input.batch_size,
            },
        },
        "5": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0],
                "positive": ["2", 0],
                "negative": ["3", 0],
                "latent_image": ["4", 0],
                "seed": input.seed,
                "steps": input.steps,
                "cfg": input.cfg,
                "sampler_name": input.sampler_name,
                "scheduler": input.scheduler,
                "denoise": 1.0,
            },
        },
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {
            "class_type": "SaveImage",
            "inputs": {"images": ["6", 0], "filename_prefix": "txt2img"},
        },
    }
