"""Logos with FLUX.1 [schnell]: text to image in 4 steps.

FLUX ships as separate files: the diffusion model (`UNETLoader`), two text encoders
(`DualCLIPLoader`: T5-XXL and CLIP-L, type `flux`) and the autoencoder (`VAELoader`). Schnell is
distilled for 4 steps at cfg 1 with the `simple` scheduler. `style` is appended to the prompt
to steer towards logo art; set it to "" for plain text to image.
"""

import random
from typing import Literal

from pydantic import BaseModel, Field

from app.workflow_types import DiffusionModel, TextEncoder, Vae


class RequestSchema(BaseModel):
    prompt: str = Field(
        min_length=1,
        description="What the logo shows, and any text on it in quotes",
        examples=['a fox head, the word "Kitsune" below it'],
    )
    style: str = Field(
        "minimal flat vector logo, centered, solid plain background",
        description="Appended to the prompt; empty for none",
    )
    width: int = Field(1024, ge=256, le=2048, multiple_of=16, description="Image width in pixels")
    height: int = Field(1024, ge=256, le=2048, multiple_of=16, description="Image height in pixels")
    batch_size: int = Field(1, ge=1, le=4, description="How many images to make")
    steps: int = Field(4, ge=1, le=12, description="Sampling steps (schnell is made for 4)")
    seed: int = Field(
        default_factory=lambda: random.randrange(2**32),
        ge=0,
        le=2**64 - 1,
        description="Noise seed; random when omitted (the response's `input` shows it)",
    )
    unet: DiffusionModel = Field("flux1-schnell.safetensors", description="FLUX schnell model")
    weight_dtype: Literal["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"] = Field(
        "default", description="Load the model's weights as this type (fp8 halves the memory)"
    )
    t5: TextEncoder = Field("t5xxl_fp8_e4m3fn.safetensors", description="T5-XXL text encoder")
    clip_l: TextEncoder = Field("clip_l.safetensors", description="CLIP-L text encoder")
    vae: Vae = Field("ae.safetensors", description="FLUX autoencoder")


def generate_workflow(input: RequestSchema) -> dict:
    text = f"{input.prompt}, {input.style}" if input.style else input.prompt
    return {
        "1": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": input.unet, "weight_dtype": input.weight_dtype},
        },
        "2": {
            "class_type": "DualCLIPLoader",
            "inputs": {"clip_name1": input.t5, "clip_name2": input.clip_l, "type": "flux"},
        },
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": input.vae}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["2", 0]}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 0]}},
        "6": {
            "class_type": "EmptySD3LatentImage",
            "inputs": {
                "width": input.width,
                "height": input.height,
                "batch_size": input.batch_size,
            },
        },
        "7": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0],
                "positive": ["4", 0],
                "negative": ["5", 0],  # ignored at cfg 1, but KSampler needs one
                "latent_image": ["6", 0],
                "seed": input.seed,
                "steps": input.steps,
                "cfg": 1.0,
                "sampler_name": "euler",
                "scheduler": "simple",
                "denoise": 1.0,
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["3", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "flux"}},
    }
