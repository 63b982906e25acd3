"""Scale an image by a factor.

Resamples the image (no model needed): 2 doubles its width and height, 0.5 halves them.
"""

from typing import Literal

from pydantic import BaseModel, Field

from app.workflow_types import InputImage


class RequestSchema(BaseModel):
    image: InputImage = Field(description="The image to scale", examples=["example.png"])
    scale_by: float = Field(2.0, ge=0.01, le=8, description="Factor for width and height")
    method: Literal["nearest-exact", "bilinear", "area", "bicubic", "lanczos"] = Field(
        "lanczos", description="Resampling method"
    )


def generate_workflow(input: RequestSchema) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": input.image}},
        "2": {
            "class_type": "ImageScaleBy",
            "inputs": {
                "image": ["1", 0],
                "upscale_method": input.method,
                "scale_by": input.scale_by,
            },
        },
        "3": {
            "class_type": "SaveImage",
            "inputs": {"images": ["2", 0], "filename_prefix": "upscale"},
        },
    }
