"""Text to image with an SDXL checkpoint (SDXL base, RealVis, Juggernaut, ...) and LoRAs.

Each LoRA in `loras` is applied in order to the model and the text encoder, with its own
strengths, before the prompt is encoded.
"""

import random

from pydantic import BaseModel, Field

from app.workflow_types import Checkpoint, Lora, Sampler, Scheduler


class LoraSpec(BaseModel):
    """A LoRA and how strongly to apply it."""

    name: Lora = Field(description="LoRA file")
    strength_model: float = Field(1.0, ge=-10, le=10, description="Strength on the model")
    strength_clip: float = Field(1.0, ge=-10, le=10, description="Strength on the text encoder")


class RequestSchema(BaseModel):
    prompt: str = Field(min_length=1, description="What to draw", examples=["a lighthouse at dusk"])
    negative_prompt: str = Field("", description="What to keep out of the image")
    width: int = Field(1024, ge=64, le=4096, multiple_of=8, description="Image width in pixels")
    height: int = Field(1024, ge=64, le=4096, multiple_of=8, description="Image height in pixels")
    batch_size: int = Field(1, ge=1, le=8, description="How many images to make")
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
    loras: list[LoraSpec] = Field([], max_length=8, description="LoRAs to apply, in order")


def generate_workflow(input: RequestSchema) -> dict:
    graph: dict = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": input.checkpoint}},
    }
    model, clip = ["1", 0], ["1", 1]
    for i, lora in enumerate(input.loras):
        node = str(100 + i)
        graph[node] = {
            "class_type": "LoraLoader",
            "inputs": {
                "model": model,
                "clip": clip,
                "lora_name": lora.name,
                "strength_model": lora.strength_model,
                "strength_clip": lora.strength_clip,
            },
        }
        model, clip = [node, 0], [node, 1]
    graph |= {
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": input.prompt, "clip": clip}},
        "3": {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": input.negative_prompt, "clip": clip},
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
                "model": model,
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
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "sdxl"}},
    }
    return graph
