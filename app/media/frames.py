"""Frames: what one decoder would draw from an image file (how many frames, the largest, the
pixels of all), counted from the file's structure without drawing any; and Unreadable, for a
file whose structure does not say how large it is. The readers are app.media.readers,
jpeg and tiff; app.media.images picks one."""

from __future__ import annotations

from dataclasses import dataclass

Size = tuple[int, int]  # width, height


class Unreadable(ValueError):
    """The file says it is an image, but its structure does not say how large."""


@dataclass
class Frames:
    """The frames a decoder would draw. A reader stops once `full`: past `limit` frames the
    image is refused whatever the rest holds, and a hostile file may hold millions."""

    limit: int
    count: int = 0
    pixels: int = 0
    largest: Size = (0, 0)

    def add(self, size: Size, times: int = 1) -> None:
        self.count += times
        self.pixels += size[0] * size[1] * times
        if size[0] * size[1] > self.largest[0] * self.largest[1]:
            self.largest = size

    @property
    def full(self) -> bool:
        return self.count > self.limit


def worst(*views: Frames) -> Frames:
    """Where decoders differ (ComfyUI 0.33 tries ffmpeg first, then Pillow), the most of each."""
    most = Frames(views[0].limit)
    most.count = max(v.count for v in views)
    most.pixels = max(v.pixels for v in views)
    most.largest = max((v.largest for v in views), key=lambda s: s[0] * s[1])
    return most


def u(data: bytes, at: int, size: int, order: str = "big") -> int:
    """The unsigned integer of `size` bytes at `at`; IndexError past the end."""
    if at < 0 or at + size > len(data):
        raise IndexError(at)
    return int.from_bytes(data[at : at + size], order)  # type: ignore[arg-type]
