"""Which image a file is, and every frame a decoder would draw from it, read from the file's
structure without decoding (app.media.frames): what app.media.caps holds to the caps.

ComfyUI's LoadImage decodes every frame of an image and stacks them as a batch: 0.3.75 through
Pillow; 0.33 through PyAV (ffmpeg) first, then through Pillow when ffmpeg draws no frame. Each
reader counts what either would draw and keeps the more (readers, jpeg, tiff).

The images accepted are PNG (and APNG), JPEG (and MPO), GIF, WebP, BMP and TIFF: the formats
those readers know. A file that any other of Pillow's readers would take (ICO and ICNS, whose
entries hide their real sizes; PSD, TGA, PCX, EPS, whose decoder runs Ghostscript...) is refused,
alone or beside one of the six: in such a polyglot, which reader wins depends on the order in
which a process imported Pillow's plugins. Anything else (video, audio, formats only ffmpeg
reads) is no image here: only its bytes are capped.
"""

from __future__ import annotations

import functools
import io
import struct
from collections.abc import Callable

from PIL import Image

from app.media.frames import Frames, Unreadable
from app.media.jpeg import jpeg
from app.media.readers import PNG_SIGNATURE, bmp, gif, png, webp
from app.media.tiff import PREFIXES, tiff

READERS: dict[str, Callable[[bytes, int], Frames]] = {
    "PNG": png,
    "JPEG": jpeg,
    "GIF": gif,
    "WEBP": webp,
    "BMP": bmp,
    "TIFF": tiff,
}
ACCEPTED = "PNG, JPEG, GIF, WebP, BMP or TIFF"

Image.init()  # every reader registered now, so that no request's thread registers one


class NotAccepted(ValueError):
    """An image in a format whose sizes are not checked here, named as Pillow names it."""


def image_frames(data: bytes, limit: int) -> tuple[str, Frames] | None:
    """The format and the frames of an image, reading at most `limit` + 1 frames; None for a
    file that is no image. Raises NotAccepted or Unreadable."""
    known = format_of(data)
    other = other_reader(data, known)
    if other is not None:
        also = f" (besides {known})" if known else ""
        raise NotAccepted(f"Pillow reads it as {other}{also}; images must be {ACCEPTED}")
    if known is None:
        return None
    try:
        return known, READERS[known](data, limit)
    except (IndexError, struct.error):
        raise Unreadable(f"the {known} ends early") from None


def format_of(data: bytes) -> str | None:
    """Which of the accepted formats the file's first bytes say (Pillow's own tests)."""
    if data.startswith(PNG_SIGNATURE):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WEBP"
    if data.startswith(b"BM"):
        return "BMP"
    if data[:4] in PREFIXES:
        return "TIFF"
    return None


def other_reader(data: bytes, known: str | None) -> str | None:
    """Another of Pillow's readers that would take the file: by its signature test, or, for
    the few readers without one (TGA, SPIDER, PCD, IM...), by trying to open it."""
    if (name := _signed_reader(data[:16], known)) is not None:
        return name
    file = io.BytesIO(data)
    for name in UNSIGNED:  # as Image.open tries them, less its own costs
        file.seek(0)
        try:
            Image.OPEN[name][0](file, "").close()
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue  # not this reader's: Image.open moves on too
        except Exception as e:  # a reader fails on it in another way: ComfyUI's Pillow would too
            raise Unreadable(f"Pillow's {name} reader fails on it: {e!r}") from None
        return name
    return None


UNSIGNED = tuple(name for name, (_, accept) in Image.OPEN.items() if accept is None)


@functools.lru_cache(maxsize=1024)  # most files of a format share their first 16 bytes
def _signed_reader(prefix: bytes, known: str | None) -> str | None:
    for name, (_, accept) in Image.OPEN.items():
        if name == known or accept is None:
            continue
        try:
            taken = accept(prefix)
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue  # a test that fails on a short prefix: Image.open moves on too
        if taken and not isinstance(taken, str):  # a str: that reader is not built in
            return name
    return None
