"""convert_output: re-encode image outputs as PNG, JPEG or WebP with validated Pillow options.

Video, audio and other files are returned as they are. Animated images keep their frames in
WebP and PNG (APNG); JPEG, which has neither frames nor alpha, takes the first frame over the
`background` colour.
"""

from __future__ import annotations

import io
from pathlib import PurePosixPath
from typing import Any

from PIL import Image, ImageColor

from app.core.convert_options import ConvertSpec, JpegConvert, WebpConvert

IMAGE_FORMATS = {"PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "MPO"}
# The format's own name as the extension, as SaladTechnologies' comfyui-api names converted files
# (clients match on `.jpeg`).
EXTENSIONS = {"png": ".png", "jpeg": ".jpeg", "jpg": ".jpg", "webp": ".webp"}


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
            _flatten(image, spec.options.background).save(out, "JPEG", **spec.options.pillow())
        elif isinstance(spec, WebpConvert):
            image.save(out, "WEBP", save_all=animated, **_frames(image, animated),
                       **spec.options.pillow())  # fmt: skip
        else:
            image.save(out, "PNG", save_all=animated, **_frames(image, animated),
                       **spec.options.pillow())  # fmt: skip
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
