"""The frames of a PNG (and APNG), GIF, WebP or BMP, read the way Pillow and ffmpeg read them,
without decoding (app.media.frames). JPEG is app.media.jpeg, TIFF app.media.tiff.

Pillow's view and ffmpeg's (ComfyUI 0.33 decodes a LoadImage file with PyAV first) differ in
two ways that matter: ffmpeg's image parsers split a file holding several concatenated images
into as many frames, where Pillow reads the first; and ffmpeg decodes a WebP's bitstream at its
own size, where libwebp uses the canvas. Each reader counts both and keeps the larger.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from app.media.frames import Frames, Size, Unreadable, u, worst

MAX_HEADER_CHUNKS = 10_000  # a real WebP has a few before its image data
MAX_PNG_CHUNKS = 200_000  # a 100 MB PNG in libpng's 8 KB IDAT chunks has 12,800
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHUNK_NAME = re.compile(rb"\w{4}")  # Pillow refuses a PNG chunk named otherwise
CHUNK = struct.Struct(">I4s")  # a chunk's length and name


def png(data: bytes, limit: int) -> Frames:
    first = _png_walk(data, 0)
    pillow = Frames(limit)
    pillow.add(first.size, first.frames + first.default_image if first.frames else 1)
    ffmpeg = Frames(limit)
    # An APNG: ffmpeg's demuxer draws each fcTL's frame on the canvas (and the default image).
    ffmpeg.add(first.size, first.controls + first.default_image if first.frames else 1)
    # ffmpeg's png parser walks each PNG's chunks to IEND, then looks for the next signature:
    # every further PNG in the file is another frame.
    at = data.find(PNG_SIGNATURE, first.end)
    while at != -1 and not ffmpeg.full:
        try:
            other = _png_walk(data, at)
            ffmpeg.add(other.size)
            at = data.find(PNG_SIGNATURE, other.end)
        except (Unreadable, IndexError):
            ffmpeg.add((0, 0))  # ffmpeg fails on it, but it still counts
            at = data.find(PNG_SIGNATURE, at + 8)
    return worst(pillow, ffmpeg)


@dataclass
class _PngWalk:
    size: Size = (0, 0)  # the largest IHDR before the image data (Pillow keeps the last)
    frames: int = 0  # what the acTL chunk before the image data counts; 0: not an APNG
    default_image: bool = False  # the IDAT image is a frame besides those (no fcTL before it)
    controls: int = 0  # fcTL chunks: the frames ffmpeg draws
    end: int = 0  # past IEND, or where the chunks stop making sense


def _png_walk(data: bytes, start: int) -> _PngWalk:
    """The chunks of the PNG at `start`, by their lengths, to IEND. Those before the image data
    are what Pillow reads: a chunk there that Pillow would refuse makes the file Unreadable."""
    if data[start + 12 : start + 16] != b"IHDR":
        raise Unreadable("a PNG starts with its IHDR chunk")
    walk, at, in_header = _PngWalk(), start + 8, True
    for _ in range(MAX_PNG_CHUNKS):
        if at + 8 > len(data):
            if in_header:
                raise Unreadable("the PNG ends before its image data")
            break
        length, name = CHUNK.unpack_from(data, at)
        body = at + 8
        if in_header:
            if not CHUNK_NAME.fullmatch(name):
                raise Unreadable(f"a PNG chunk has no name at byte {at + 4}")
            if name == b"IHDR":
                ihdr = u(data, body, 4), u(data, body + 4, 4)
                walk.size = max(walk.size, ihdr, key=lambda s: s[0] * s[1])
            elif name == b"acTL":
                count = u(data, body, 4)
                walk.frames = max(walk.frames, count if 0 < count <= 2**31 else 0)
            elif name in (b"IDAT", b"fdAT", b"IEND"):  # where Pillow stops reading
                walk.default_image = name == b"IDAT" and not walk.controls and walk.frames > 0
                in_header = False
        elif length > 0x7FFFFFFF:  # where ffmpeg's parser gives up on this PNG
            break
        if name == b"fcTL":
            walk.controls += 1
        at = body + length + 4  # the CRC
        if name == b"IEND":
            break
    else:
        raise Unreadable(f"more than {MAX_PNG_CHUNKS} PNG chunks")
    walk.end = min(at, len(data))
    return walk


def gif(data: bytes, limit: int) -> Frames:
    """Every frame Pillow would draw, each on the canvas as large as it has grown by then."""
    return _GifWalk(data, limit).frames


GIF_BLOCK = re.compile(rb"[!,;]")  # Pillow skips any other byte between blocks


class _GifWalk:
    """Pillow's GifImageFile._seek, block by block (its quirks too: after an extension's first
    sub-block it reads sub-blocks until an empty one, even if the first was that)."""

    def __init__(self, data: bytes, limit: int) -> None:
        self.data = data
        self.frames = Frames(limit)
        self.steps = len(data) // 16 + 10_000  # sub-blocks: a real GIF's are 255 bytes
        canvas = u(data, 6, 2, "little"), u(data, 8, 2, "little")
        flags, at = data[10], 13
        if flags & 0x80:
            at += 3 << ((flags & 7) + 1)  # the global colour table
        try:
            while not self.frames.full:
                found = self._frame(at, canvas)
                if found is None:
                    break
                canvas, at = found
                self.frames.add(canvas)
                at = self._skip(at)  # the frame's image data
        except IndexError:
            pass  # a frame cut short: Pillow stops there too

    def _frame(self, at: int, canvas: Size) -> tuple[Size, int] | None:
        """The canvas once the next image descriptor is read, and where its data starts."""
        data = self.data
        while (block := GIF_BLOCK.search(data, at)) is not None:
            at = block.start()
            if data[at] == 0x3B:  # the trailer
                return None
            if data[at] == 0x21:  # an extension: its label, then sub-blocks
                label, at = data[at + 1], at + 2
                first, at = self._sub_block(at)
                if label == 0xFE:  # a comment: read up to its empty sub-block
                    while first:
                        first, at = self._sub_block(at)
                    continue
                loop = first is not None and first.startswith(b"NETSCAPE2.0")
                if label == 0xFF and loop and not self.frames.count:
                    _, at = self._sub_block(at)  # the loop count: Pillow reads it in frame 0
                at = self._skip(at)
                continue
            left, top = u(data, at + 1, 2, "little"), u(data, at + 3, 2, "little")
            right = left + u(data, at + 5, 2, "little")
            bottom = top + u(data, at + 7, 2, "little")
            canvas = max(canvas[0], right), max(canvas[1], bottom)
            local = data[at + 9]
            at += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0)
            if at >= len(data):  # the file ends before the LZW code size
                raise IndexError(at)
            return canvas, at + 1
        return None

    def _sub_block(self, at: int) -> tuple[bytes | None, int]:
        """Pillow's GifImageFile.data(): a sub-block's bytes, or None at an empty one."""
        self.steps -= 1
        if self.steps < 0:
            raise Unreadable("the GIF's sub-blocks are too many to read")
        length = self.data[at : at + 1]
        if length and length[0]:
            block = self.data[at + 1 : at + 1 + length[0]]
            return block, at + 1 + len(block)
        return None, at + len(length)

    def _skip(self, at: int) -> int:
        while True:
            block, at = self._sub_block(at)
            if not block:
                return at


WEBP_CHUNKS = (b"VP8 ", b"VP8L", b"VP8X")


def webp(data: bytes, limit: int) -> Frames:
    """libwebp (Pillow) draws each frame on the canvas; ffmpeg draws the still bitstream at its
    own size, whatever canvas an extended header declares. ffmpeg's parser takes each RIFF as
    long as it says and looks for the next after it: each further WebP is a frame."""
    canvas, frames, bitstream = _webp_file(data, 0)
    pillow = Frames(limit)
    pillow.add(canvas, frames)
    ffmpeg = Frames(limit)
    ffmpeg.add(max(canvas, bitstream, key=lambda s: s[0] * s[1]))
    at = data.find(b"RIFF", _riff_end(data, 0))
    while at != -1 and not ffmpeg.full:
        if data[at + 8 : at + 12] != b"WEBP":
            at = data.find(b"RIFF", at + 4)
            continue
        try:
            other, _, bits = _webp_file(data, at)
            ffmpeg.add(max(other, bits, key=lambda s: s[0] * s[1]))
        except (Unreadable, IndexError):
            ffmpeg.add((0, 0))
        at = data.find(b"RIFF", _riff_end(data, at))
    return worst(pillow, ffmpeg)


def _riff_end(data: bytes, start: int) -> int:
    return start + 8 + (u(data, start + 4, 4, "little") if start + 8 <= len(data) else 0)


def _webp_file(data: bytes, start: int) -> tuple[Size, int, Size]:
    """The canvas, the frames (ANMF chunks, or 1) and the largest still bitstream."""
    first = data[start + 12 : start + 16]
    if first not in WEBP_CHUNKS:
        raise Unreadable("the WebP's first chunk is not VP8, VP8L or VP8X")
    canvas = _webp_bitstream(data, start + 12)
    frames, bitstream, at = 0, (0, 0), start + 12
    end = min(len(data), _riff_end(data, start))
    for _ in range(MAX_HEADER_CHUNKS):
        if at + 8 > end:
            break
        name, length = data[at : at + 4], u(data, at + 4, 4, "little")
        if name == b"ANMF":
            frames += 1
        elif name in (b"VP8 ", b"VP8L"):
            bitstream = max(bitstream, _webp_bitstream(data, at), key=lambda s: s[0] * s[1])
        at += 8 + length + (length & 1)
    else:
        raise Unreadable(f"more than {MAX_HEADER_CHUNKS} WebP chunks")
    return canvas, max(frames, 1), bitstream


def _webp_bitstream(data: bytes, at: int) -> Size:
    """The size the VP8, VP8L or VP8X chunk at `at` declares (a VP8X's is the canvas)."""
    name, payload = data[at : at + 4], at + 8
    if name == b"VP8 ":
        if data[payload + 3 : payload + 6] != b"\x9d\x01\x2a":
            raise Unreadable("a lossy WebP's frame has no start code")
        width = u(data, payload + 6, 2, "little") & 0x3FFF
        return width, u(data, payload + 8, 2, "little") & 0x3FFF
    if name == b"VP8L":
        if data[payload] != 0x2F:
            raise Unreadable("a lossless WebP has no signature byte")
        bits = u(data, payload + 1, 4, "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return u(data, payload + 4, 3, "little") + 1, u(data, payload + 7, 3, "little") + 1


BMP_HEADERS = (12, 40, 52, 56, 64, 108, 124)  # the info header sizes Pillow and ffmpeg read


def bmp(data: bytes, limit: int) -> Frames:
    """One frame for Pillow; for ffmpeg, whose parser splits concatenated bitmaps, one for each
    "BM" followed by a valid info header anywhere in the file."""
    pillow = Frames(limit)
    pillow.add(_bmp_size(data, 0))
    ffmpeg = Frames(limit)
    ffmpeg.add(pillow.largest)
    at = data.find(b"BM", 2)
    while at != -1 and not ffmpeg.full:
        if at + 26 <= len(data) and u(data, at + 14, 4, "little") in BMP_HEADERS:
            ffmpeg.add(_bmp_size(data, at))
        at = data.find(b"BM", at + 2)
    return worst(pillow, ffmpeg)


def _bmp_size(data: bytes, at: int) -> Size:
    header = u(data, at + 14, 4, "little")
    if header == 12:  # OS/2 BITMAPCOREHEADER
        return u(data, at + 18, 2, "little"), u(data, at + 20, 2, "little")
    if header not in BMP_HEADERS:
        raise Unreadable(f"a BMP info header of {header} bytes")
    width, height = u(data, at + 18, 4, "little"), u(data, at + 22, 4, "little")
    # Pillow: a height whose top byte is 0xFF is negative (top-down), any other unsigned;
    # ffmpeg: signed. The larger of the two readings counts.
    flipped = 2**32 - height if height >> 24 == 0xFF else height
    signed = abs(height - 2**32) if height >= 2**31 else height
    return width, max(flipped, signed)
