"""Image to image with an SDXL checkpoint.

Encodes the input image into a latent and samples it partly (`denoise`), so the result keeps
the input's composition and size.
"""

import random

from pydantic import BaseModel, Field

from app.workflow_types import Checkpoint, InputImage, Sampler, Scheduler


class RequestSchema(BaseModel):
    image: InputImage = Field(description="The image to start from", examples=["example.png"])
    prompt: str = Field(min_length=1, description="What to draw", examples=["an oil painting"])
    negative_prompt: str = Field("", description="What to keep out of the image")
    denoise: float = Field(
        0.6, gt=0, le=1, description="How much to change: 0 keeps the image, 1 ignores it"
    )
    steps: int = Field(25, ge=1, le=150, description="Sampling steps")
    cfg: float = Field(7.0, ge=0, le=30, description="Classifier-free guidance scale")
    seed: int = Field(
        default_factory=lambda: random.randrange(2**32),
        ge=0,
        le=2**64 - 1,
        description="Noise seed; random when omitted (the response's `input` shows it)",
    )
    sampler_name: Sampler = Field("dpmpp_2m", description="Sampler")
    scheduler: Scheduler = Field("karras", description="Noise schedule")
    checkpoint: Checkpoint = Field("sd_xl_base_1.0.safetensors", description="SDXL checkpoint")


def generate_workflow(input: RequestSchema) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": input.checkpoint}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": input.prompt, "clip": ["1", 1]}},
        "3": {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": input.negative_prompt, "clip": ["1", 1]},
        },
        "4": {"class_type": "LoadImage", "inputs": {"image": input.image}},
        "5": {"class_type": "VAEEncode", "inputs": {"pixels": ["4", 0], "vae": ["1", 2]}},
        "6": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0],
                "positive": ["2", 0],
                "negative": ["3", 0],
                "latent_image": ["5", 0],
                "seed": input.seed,
                "steps": input.steps,
                "cfg": input.cfg,
                "sampler_name": input.sampler_name,
                "scheduler": input.scheduler,
                "denoise": input.denoise,
            },
        },
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "sdxl"}},
    }
