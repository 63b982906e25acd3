"""Image to video with CogVideoX-5b-I2V, through kijai's CogVideoX wrapper nodes.

Needs the custom nodes ComfyUI-CogVideoXWrapper (`DownloadAndLoadCogVideoModel`,
`CogVideoTextEncode`, `CogVideoImageEncode`, `CogVideoSampler`, `CogVideoDecode`) and
ComfyUI-VideoHelperSuite (`VHS_VideoCombine`, which saves the MP4, reported under `gifs`). The
input image is scaled and cropped to the frame size; the model is trained at 720x480, 49 frames.
"""

import random

from pydantic import BaseModel, Field

from app.workflow_types import InputImage, TextEncoder

STANDARD_NEGATIVE = (
    "The video is not of a high quality, it has a low resolution. Watermark present in each "
    "frame. Strange motion trajectory."
)


class RequestSchema(BaseModel):
    image: InputImage = Field(description="The first frame", examples=["example.png"])
    prompt: str = Field(
        min_length=1,
        description="What happens in the video",
        examples=["a majestic stag grazing in a forest, basking in the setting sun"],
    )
    negative_prompt: str = Field(STANDARD_NEGATIVE, description="What to keep out of the video")
    width: int = Field(720, ge=128, le=1360, multiple_of=16, description="Frame width in pixels")
    height: int = Field(480, ge=128, le=1360, multiple_of=16, description="Frame height in pixels")
    num_frames: int = Field(49, ge=1, le=1024, description="Number of frames")
    frame_rate: int = Field(8, ge=1, le=60, description="Frames per second of the MP4")
    steps: int = Field(25, ge=1, le=100, description="Sampling steps")
    cfg: float = Field(6.0, ge=0, le=30, description="Classifier-free guidance scale")
    seed: int = Field(
        default_factory=lambda: random.randrange(2**32),
        ge=0,
        le=2**64 - 1,
        description="Noise seed; random when omitted (the response's `input` shows it)",
    )
    text_encoder: TextEncoder = Field(
        "t5xxl_fp8_e4m3fn.safetensors", description="T5-XXL text encoder"
    )


def generate_workflow(input: RequestSchema) -> dict:
    return {
        "1": {
            "class_type": "DownloadAndLoadCogVideoModel",
            "inputs": {"model": "THUDM/CogVideoX-5b-I2V", "precision": "bf16"},
        },
        "2": {
            "class_type": "CLIPLoader",
            "inputs": {"clip_name": input.text_encoder, "type": "sd3"},
        },
        "3": {
            "class_type": "CogVideoTextEncode",
            "inputs": {"clip": ["2", 0], "prompt": input.prompt},
        },
        "4": {
            "class_type": "CogVideoTextEncode",
            "inputs": {"clip": ["3", 1], "prompt": input.negative_prompt, "force_offload": True},
        },
        "5": {"class_type": "LoadImage", "inputs": {"image": input.image}},
        "6": {
            "class_type": "ImageScale",
            "inputs": {
                "image": ["5", 0],
                "upscale_method": "lanczos",
                "width": input.width,
                "height": input.height,
                "crop": "center",
            },
        },
        "7": {
            "class_type": "CogVideoImageEncode",
            "inputs": {"vae": ["1", 1], "start_image": ["6", 0]},
        },
        "8": {
            "class_type": "CogVideoSampler",
            "inputs": {
                "model": ["1", 0],
                "positive": ["3", 0],
                "negative": ["4", 0],
                "image_cond_latents": ["7", 0],
                "num_frames": input.num_frames,
                "steps": input.steps,
                "cfg": input.cfg,
                "seed": input.seed,
                "scheduler": "CogVideoXDDIM",
            },
        },
        "9": {
            "class_type": "CogVideoDecode",
            "inputs": {
                "vae": ["1", 1],
                "samples": ["8", 0],
                "enable_vae_tiling": True,
                "tile_sample_min_height": 240,
                "tile_sample_min_width": 360,
                "tile_overlap_factor_height": 0.2,
                "tile_overlap_factor_width": 0.2,
                "auto_tile_size": True,
            },
        },
        "10": {
            "class_type": "VHS_VideoCombine",
            "inputs": {
                "images": ["9", 0],
                "frame_rate": input.frame_rate,
                "loop_count": 0,
                "filename_prefix": "cogvideox",
                "format": "video/h264-mp4",
                "pix_fmt": "yuv420p",
                "crf": 19,
                "save_metadata": True,
                "pingpong": False,
                "save_output": True,
            },
        },
    }
