"""Input caps: how large an input file may be (INPUT_MAX_MB), and how much an input image may
make ComfyUI decode (MAX_INPUT_PIXELS over all its frames, MAX_INPUT_FRAMES frames), checked
before the file reaches ComfyUI or anything decodes it. app.media.images reads the frames
from the file's structure, as Pillow and ffmpeg would draw them.

The pixel cap holds for the sum over frames: ComfyUI's LoadImage decodes every frame and stacks
them into one float tensor (12 bytes a pixel), so memory grows with the sum; a cap per frame
would let a 1 MB GIF of a thousand frames at the cap decode to hundreds of GB. The frame cap
bounds what tiny frames cost (ComfyUI adds a 64x64 float mask and Python work per frame). A 48 KB
PNG can declare 20000x20000 pixels: 1.2 GB decoded, 4.8 GB as ComfyUI's tensor.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from app.core.errors import InputError
from app.core.settings import Settings
from app.media.frames import Frames, Unreadable
from app.media.images import NotAccepted, image_frames

BASE64_SLACK = 4096
# Reading a file's structure is linear in its bytes: past this, off the event loop.
INLINE_CHECK_BYTES = 256 * 1024


def megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP"


@dataclass(frozen=True)
class InputCaps:
    """INPUT_MAX_MB, MAX_INPUT_PIXELS and MAX_INPUT_FRAMES: each breach is a 400 located where
    the file was given."""

    max_bytes: int
    max_pixels: int
    max_frames: int

    @staticmethod
    def from_settings(settings: Settings) -> InputCaps:
        return InputCaps(
            settings.input_max_bytes, settings.max_input_pixels, settings.max_input_frames
        )

    def check_bytes(self, size: int, where: str) -> None:
        if size > self.max_bytes:
            raise InputError(
                f"{where}: the file is {size / 2**20:.1f} MB; INPUT_MAX_MB allows "
                f"{self.max_bytes / 2**20:g} MB",
                location=where,
                details={"limit": "INPUT_MAX_MB", "bytes": size, "max_bytes": self.max_bytes},
            )

    def check_base64(self, text: str, where: str) -> None:
        """Refuse base64 whose decoded bytes would clearly be over the cap, before decoding it
        (check() then counts exactly)."""
        decoded = len(text) * 3 // 4
        if decoded > self.max_bytes + BASE64_SLACK:  # a data: prefix and line breaks add some
            self.check_bytes(decoded, where)

    def check(self, data: bytes, where: str) -> None:
        """The file's bytes, then (for an image) its frames and their pixels."""
        self.check_bytes(len(data), where)
        try:
            found = image_frames(data, self.max_frames)
        except NotAccepted as e:
            raise InputError(
                f"{where}: not an image the gateway accepts: {e}",
                location=where,
                details={"limit": "image format"},
            ) from None
        except Unreadable as e:
            raise InputError(f"{where}: not a readable image: {e}", location=where) from None
        if found is not None:
            self._check_frames(found[1], where)

    async def check_off_loop(self, data: bytes, where: str) -> None:
        """check(), in a worker thread for a file large enough to hold the event loop up."""
        if len(data) <= INLINE_CHECK_BYTES:
            self.check(data, where)
        else:
            await asyncio.to_thread(self.check, data, where)

    def _check_frames(self, frames: Frames, where: str) -> None:
        if frames.count > self.max_frames:  # counted no further than that
            raise InputError(
                f"{where}: the image has more than {self.max_frames} frames; "
                f"MAX_INPUT_FRAMES allows {self.max_frames}",
                location=where,
                details={"limit": "MAX_INPUT_FRAMES", "max_frames": self.max_frames},
            )
        if frames.pixels <= self.max_pixels:
            return
        (width, height), allowed = frames.largest, megapixels(self.max_pixels)
        if frames.count == 1:
            said = f"the image is {width}x{height} pixels ({megapixels(frames.pixels)})"
        else:
            said = (
                f"the image's {frames.count} frames are {megapixels(frames.pixels)} in all "
                f"(the largest {width}x{height})"
            )
        raise InputError(
            f"{where}: {said}; MAX_INPUT_PIXELS allows {allowed} over all frames",
            location=where,
            details={
                "limit": "MAX_INPUT_PIXELS",
                "width": width,
                "height": height,
                "frames": frames.count,
                "pixels": frames.pixels,
                "max_pixels": self.max_pixels,
            },
        )
