"""Text to video with LTX-Video, saved as an MP4 file.

The LTX checkpoint holds the model and its VAE; the prompt goes through a T5-XXL text encoder
(`CLIPLoader`, type `ltxv`). Sampling uses LTX's own sigma schedule (`LTXVScheduler`) with
`SamplerCustom`; the frames become a video (`CreateVideo`) saved by `SaveVideo`.
"""

import random

from pydantic import BaseModel, Field

from app.workflow_types import Checkpoint, TextEncoder

STANDARD_NEGATIVE = (
    "low quality, worst quality, deformed, distorted, disfigured, motion smear, "
    "motion artifacts, fused fingers, bad anatomy, weird hand, ugly"
)


class RequestSchema(BaseModel):
    prompt: str = Field(
        min_length=1,
        description="What happens in the video; LTX likes long, detailed descriptions",
        examples=["A red kite flies over a green hill on a windy day, the camera follows it"],
    )
    negative_prompt: str = Field(STANDARD_NEGATIVE, description="What to keep out of the video")
    width: int = Field(768, ge=64, le=1920, multiple_of=32, description="Frame width in pixels")
    height: int = Field(512, ge=64, le=1920, multiple_of=32, description="Frame height in pixels")
    length: int = Field(97, ge=9, le=257, description="Number of frames: 8k+1 (9, 17, ..., 97)")
    frame_rate: int = Field(25, ge=1, le=60, description="Frames per second")
    steps: int = Field(30, ge=1, le=100, description="Sampling steps")
    cfg: float = Field(3.0, ge=0, le=20, description="Classifier-free guidance scale")
    seed: int = Field(
        default_factory=lambda: random.randrange(2**32),
        ge=0,
        le=2**64 - 1,
        description="Noise seed; random when omitted (the response's `input` shows it)",
    )
    checkpoint: Checkpoint = Field(
        "ltx-video-2b-v0.9.5.safetensors", description="LTX-Video checkpoint"
    )
    text_encoder: TextEncoder = Field("t5xxl_fp16.safetensors", description="T5-XXL text encoder")


def generate_workflow(input: RequestSchema) -> dict:
    if (input.length - 1) % 8:
        raise ValueError(f"length must be 8k+1 frames (such as 97 or 105), not {input.length}")
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": input.checkpoint}},
        "2": {
            "class_type": "CLIPLoader",
            "inputs": {"clip_name": input.text_encoder, "type": "ltxv"},
        },
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": input.prompt, "clip": ["2", 0]}},
        "4": {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": input.negative_prompt, "clip": ["2", 0]},
        },
        "5": {
            "class_type": "LTXVConditioning",
            "inputs": {"positive": ["3", 0], "negative": ["4", 0], "frame_rate": input.frame_rate},
        },
        "6": {
            "class_type": "EmptyLTXVLatentVideo",
            "inputs": {
                "width": input.width,
                "height": input.height,
                "length": input.length,
                "batch_size": 1,
            },
        },
        "7": {
            "class_type": "LTXVScheduler",
            "inputs": {
                "steps": input.steps,
                "max_shift": 2.05,
                "base_shift": 0.95,
                "stretch": True,
                "terminal": 0.1,
                "latent": ["6", 0],
            },
        },
        "8": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "9": {
            "class_type": "SamplerCustom",
            "inputs": {
                "model": ["1", 0],
                "add_noise": True,
                "noise_seed": input.seed,
                "cfg": input.cfg,
                "positive": ["5", 0],
                "negative": ["5", 1],
                "sampler": ["8", 0],
                "sigmas": ["7", 0],
                "latent_image": ["6", 0],
            },
        },
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["1", 2]}},
        "11": {
            "class_type": "CreateVideo",
            "inputs": {"images": ["10", 0], "fps": input.frame_rate},
        },
        "12": {
            "class_type": "SaveVideo",
            "inputs": {
                "video": ["11", 0],
                "filename_prefix": "ltx",
                "format": "mp4",
                "codec": "h264",
            },
        },
    }
