"""The frames of a JPEG (app.media.frames): Pillow's view (one image, or every image an MP index
lists: an MPO) and ffmpeg's (every JPEG its parser splits the file into).

Pillow reads the markers before the first scan and takes the size of the last frame header
(SOFn); libjpeg the first; here the largest counts. An MPO's index (an APP2 "MPF" segment, a
small TIFF directory) lists each image's offset; Pillow draws each. ffmpeg's mjpeg parser starts
a frame at every start-of-image marker followed by another marker, skipping segments by their
lengths (so a thumbnail inside an APP1 segment is no frame), and decodes each frame's SOFn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.media.frames import Frames, Size, Unreadable, u, worst
from app.media.tiff import Layout, directory, first_integer

# Start-of-frame markers: C0-CF but DHT (C4), JPG (C8) and DAC (CC).
SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
MAX_HEADER_SEGMENTS = 10_000  # a real JPEG has a few dozen before its first scan
NUMBER_OF_IMAGES, MP_ENTRY = 0xB001, 0xB002
# The markers ffmpeg's parser acts on: a start of image, and those with a length. Stuffing (FF 00),
# fill (FF FF), restarts (D0-D7) and the end of image (D9) it passes over.
SEGMENT = re.compile(rb"\xff[\xc0-\xcf\xd8\xda-\xfe]")


@dataclass
class Header:
    """What Pillow reads before the first scan: the largest SOFn, and the MP index if any."""

    size: Size
    mp_index: int | None = None  # where the last APP2 "MPF" segment's TIFF header starts
    mp_length: int = 0
    ultra_hdr: bool = False  # Pillow reads those as one image whatever their MP index says


def jpeg(data: bytes, limit: int) -> Frames:
    first = header(data, 0)
    pillow = Frames(limit)
    if first.mp_index is not None and not first.ultra_hdr:
        _mpo(data, first, pillow)
    else:
        pillow.add(first.size)
    return worst(pillow, _ffmpeg(data, limit))


def header(data: bytes, start: int) -> Header:
    """The markers from the SOI at `start` to the first scan. Junk between segments, which
    Pillow skips one byte at a time in Python, is refused."""
    found = Header((0, 0))
    at = start + 2
    for _ in range(MAX_HEADER_SEGMENTS):
        if data[at] != 0xFF:
            raise Unreadable("a JPEG marker is missing")
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            at += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan
            if not found.size[0] * found.size[1]:
                raise Unreadable("the JPEG has no frame header")
            return found
        length = u(data, at + 2, 2)
        if length < 2:
            raise Unreadable("a JPEG segment is shorter than its length field")
        body = data[at + 4 : at + 2 + length]
        if marker in SOF:
            height, width = u(data, at + 5, 2), u(data, at + 7, 2)
            if not height:  # the height would come in a DNL marker after the first scan
                raise Unreadable("the JPEG's frame header gives no height")
            found.size = max(found.size, (width, height), key=lambda s: s[0] * s[1])
        elif marker == 0xE2 and body.startswith(b"MPF\x00"):
            found.mp_index, found.mp_length = at + 8, length - 6
        elif marker == 0xE1 and b' hdrgm:Version="' in body:
            found.ultra_hdr = True
        at += 2 + length
    raise Unreadable(f"more than {MAX_HEADER_SEGMENTS} JPEG segments before the first scan")


def _mpo(data: bytes, first: Header, frames: Frames) -> None:
    """Each image of the MP index, as Pillow's MpoImageFile seeks to it (offsets from the
    index's own start; the first image is the file's start). One image: a plain JPEG."""
    assert first.mp_index is not None
    index = data[first.mp_index : first.mp_index + first.mp_length]
    try:
        layout = Layout.of(index[:4])
        if layout.big:
            raise Unreadable("an MP index in BigTIFF form")  # Pillow: a plain JPEG; refused
        ifd = directory(
            index, layout.first_ifd(index), layout, frozenset({NUMBER_OF_IMAGES, MP_ENTRY})
        )
        images = first_integer(index, ifd.entries[NUMBER_OF_IMAGES][0], layout)
    except (KeyError, IndexError):
        raise Unreadable("the JPEG's MP index is broken") from None
    if images <= 1:
        frames.add(first.size)
        return
    if images > frames.limit:
        frames.add((0, 0), images)  # too many to read: refused for the count alone
        return
    kind, count, value = ifd.entries.get(MP_ENTRY, [(0, 0, b"")])[0]
    entries = index[layout.uint(value, 0, 4) :] if count > 4 else value
    order = "big" if index.startswith(b"MM\x00\x2a") else "little"  # as Pillow reads them
    if kind != 7 or len(entries) < 16 * images:
        raise Unreadable("the JPEG's MP index lists fewer images than it counts")
    for i in range(images):
        offset = 0 if i == 0 else first.mp_index + u(entries, 16 * i + 8, 4, order)
        if data[offset : offset + 3] != b"\xff\xd8\xff":
            raise Unreadable(f"image {i + 1} of the JPEG's MP index is not a JPEG")
        frames.add(header(data, offset).size)


def _ffmpeg(data: bytes, limit: int) -> Frames:
    """The frames ffmpeg's mjpeg parser splits the file into, each at its largest SOFn."""
    frames, size, at = Frames(limit), None, 0
    budget = len(data) // 64 + MAX_HEADER_SEGMENTS  # a real JPEG's segments are far fewer
    while (found := SEGMENT.search(data, at)) is not None and not frames.full:
        budget -= 1
        if budget < 0:
            raise Unreadable("the JPEG has more segments than any real one")
        i, marker = found.start(), data[found.start() + 1]
        if marker == 0xD8:  # a start of image, if another marker follows
            if data[i + 2 : i + 3] == b"\xff" and data[i + 3 : i + 4] >= b"\xc0":
                if size is not None:
                    frames.add(size)
                size = (0, 0)
            at = i + 2
            continue
        if i + 4 > len(data):
            break
        if marker in SOF and size is not None and i + 9 <= len(data):
            width, height = u(data, i + 7, 2), u(data, i + 5, 2)
            if not height:  # ffmpeg would take it from a DNL marker: refused, as in a header
                raise Unreadable("a JPEG frame header gives no height")
            size = max(size, (width, height), key=lambda s: s[0] * s[1])
        at = i + 2 + max(u(data, i + 2, 2), 2)
    if size is not None and not frames.full:
        frames.add(size)
    return frames
