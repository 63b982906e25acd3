"""thumbnail: a small JPEG of an image, for a person to glance at (the operator page).

Bounded both ways: an image of more than MAX_PIXELS is not decoded at all (its header says its
size), and what comes out fits in SIDE_PX by SIDE_PX.
"""

from __future__ import annotations

import io

from PIL import Image

from app.media.convert import IMAGE_FORMATS

SIDE_PX = 256  # the longest side of a thumbnail
MAX_PIXELS = 25 * 2**20  # larger images get no thumbnail (decoding one costs ~4 bytes a pixel)
QUALITY = 80


class NoThumbnail(ValueError):
    """The bytes are no image Pillow reads, or one too large to decode for a glance."""


def thumbnail(data: bytes) -> bytes:
    """A JPEG of the image's first frame, at most SIDE_PX on its longest side; NoThumbnail if
    there can be none. CPU-bound: call it in a worker thread."""
    try:
        image = Image.open(io.BytesIO(data))
    except (OSError, Image.DecompressionBombError) as e:
        raise NoThumbnail(f"not an image Pillow reads ({e})") from None
    with image:
        if image.format not in IMAGE_FORMATS:
            raise NoThumbnail(f"{image.format} is not an image format shown here")
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise NoThumbnail(f"{width}x{height} is too large to decode for a thumbnail")
        try:
            image.seek(0)
            image.thumbnail((SIDE_PX, SIDE_PX))  # a JPEG is decoded at a fraction of its size
            small = _flat(image)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise NoThumbnail(f"the image cannot be decoded ({e})") from None
    out = io.BytesIO()
    small.save(out, "JPEG", quality=QUALITY)
    return out.getvalue()


def _flat(image: Image.Image) -> Image.Image:
    """The image as RGB, transparent pixels over white."""
    if image.mode == "RGB":
        return image.copy()
    rgba = image.convert("RGBA")
    flat = Image.new("RGB", rgba.size, (255, 255, 255))
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat
