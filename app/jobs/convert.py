"""convert_output: re-encode image outputs as PNG, JPEG or WebP with validated Pillow options.

Video, audio and other files are returned as they are. Animated images keep their frames in
WebP and PNG (APNG); JPEG, which has neither frames nor alpha, takes the first frame over the
`background` colour.
"""

from __future__ import annotations

import io
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from PIL import Image, ImageColor
from pydantic import BaseModel, ConfigDict, Field, field_validator

IMAGE_FORMATS = {"PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "MPO"}
EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PngOptions(_Options):
    compress_level: int = Field(6, ge=0, le=9, description="zlib level, 0 (none) to 9 (smallest)")
    optimize: bool = Field(False, description="Spend more time for a smaller file")


class JpegOptions(_Options):
    quality: int = Field(90, ge=1, le=100, description="1 (smallest) to 100 (best)")
    progressive: bool = Field(False, description="Progressive JPEG")
    optimize: bool = Field(False, description="Optimise the Huffman tables")
    background: str = Field(
        "#ffffff", description="Colour that transparent pixels become (JPEG has no alpha)"
    )

    @field_validator("background")
    @classmethod
    def _colour(cls, value: str) -> str:
        try:
            ImageColor.getrgb(value)
        except ValueError:
            raise ValueError("not a colour, e.g. #ffffff or white") from None
        return value


class WebpOptions(_Options):
    quality: int = Field(80, ge=1, le=100, description="1 (smallest) to 100 (best)")
    lossless: bool = Field(False, description="Lossless WebP")
    method: int = Field(4, ge=0, le=6, description="0 (fast) to 6 (slower, smaller)")


class PngConvert(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["png"] = Field(description="Re-encode images as PNG")
    options: PngOptions = Field(default_factory=PngOptions, description="PNG options")


class JpegConvert(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["jpeg"] = Field(description="Re-encode images as JPEG")
    options: JpegOptions = Field(default_factory=JpegOptions, description="JPEG options")


class WebpConvert(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["webp"] = Field(description="Re-encode images as WebP")
    options: WebpOptions = Field(default_factory=WebpOptions, description="WebP options")


ConvertOutput = Annotated[PngConvert | JpegConvert | WebpConvert, Field(discriminator="format")]
ConvertSpec = PngConvert | JpegConvert | WebpConvert


def converted_name(filename: str, spec: ConvertSpec) -> str:
    return str(PurePosixPath(filename).with_suffix(EXTENSIONS[spec.format]))


def convert(data: bytes, spec: ConvertSpec) -> bytes | None:
    """The image re-encoded as asked, or None when data is not an image (returned as is)."""
    try:
        image = Image.open(io.BytesIO(data))
    except (OSError, Image.DecompressionBombError):
        return None
    with image:
        if image.format not in IMAGE_FORMATS:
            return None
        out = io.BytesIO()
        animated = getattr(image, "n_frames", 1) > 1
        if isinstance(spec, JpegConvert):
            _flatten(image, spec.options.background).save(
                out, "JPEG", **spec.options.model_dump(exclude={"background"})
            )
        elif isinstance(spec, WebpConvert):
            image.save(out, "WEBP", save_all=animated, **_frames(image, animated),
                       **spec.options.model_dump())  # fmt: skip
        else:
            image.save(out, "PNG", save_all=animated, **_frames(image, animated),
                       **spec.options.model_dump())  # fmt: skip
        return out.getvalue()


def _frames(image: Image.Image, animated: bool) -> dict[str, Any]:
    if not animated:
        return {}
    return {"duration": image.info.get("duration", 100), "loop": image.info.get("loop", 0)}


def _flatten(image: Image.Image, background: str) -> Image.Image:
    """The first frame as RGB, transparent pixels over the background colour."""
    image.seek(0)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, ImageColor.getrgb(background))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")
