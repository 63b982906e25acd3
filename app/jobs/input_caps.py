"""Input caps: how large an input file may be (INPUT_MAX_MB) and how many pixels an input image
may have (MAX_INPUT_PIXELS), checked before the file reaches ComfyUI or anything decodes it.

An image's size is read from its header alone, by walking the format's structure (never by
decoding, and not through Pillow, whose WebP opener sets up a decoder for the whole canvas): a
PNG's IHDR, a JPEG's frame header (SOFn), a WebP's VP8/VP8L/VP8X header, every image descriptor
of a GIF (a frame larger than the screen enlarges the canvas Pillow decodes into), a BMP's info
header, each IFD of a TIFF. The largest frame counts. A 48 KB PNG can declare 20000x20000 pixels;
decoding it would take 1.2 GB, and ComfyUI's float tensor of it 4.8 GB.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.core.errors import InputError

Size = tuple[int, int]  # width, height
MAX_TIFF_PAGES = 1000
BASE64_SLACK = 4096


class Unreadable(ValueError):
    """The file says it is an image, but its header does not say how large."""


def image_size(data: bytes) -> Size | None:
    """(width, height) of the largest frame of a PNG, JPEG, WebP, GIF, BMP or TIFF, from its
    header; None for a file of another kind. Raises Unreadable for a broken header."""
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            return _png(data)
        if data.startswith(b"\xff\xd8\xff"):
            return _jpeg(data)
        if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
            return _webp(data)
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return _gif(data)
        if data.startswith(b"BM"):
            return _bmp(data)
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff(data)
    except IndexError:
        raise Unreadable("the header ends early") from None
    return None


def _u(data: bytes, at: int, size: int, order: str = "big") -> int:
    if at + size > len(data):
        raise IndexError(at)
    return int.from_bytes(data[at : at + size], order)  # type: ignore[arg-type]


def _png(data: bytes) -> Size:
    if data[12:16] != b"IHDR":
        raise Unreadable("a PNG starts with its IHDR chunk")
    return _u(data, 16, 4), _u(data, 20, 4)


# Start-of-frame markers: C0-CF but DHT (C4), JPG (C8) and DAC (CC).
SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg(data: bytes) -> Size:
    at = 2
    while True:
        if data[at] != 0xFF:
            raise Unreadable("a JPEG marker is missing")
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            at += 2
            continue
        if marker in SOF:
            height, width = _u(data, at + 5, 2), _u(data, at + 7, 2)
            if not height:  # the height would come in a DNL marker after the first scan
                raise Unreadable("the JPEG's frame header gives no height")
            return width, height
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before
            raise Unreadable("the JPEG has no frame header")
        at += 2 + _u(data, at + 2, 2)


def _webp(data: bytes) -> Size:
    kind, payload = data[12:16], 20
    if kind == b"VP8 ":
        if data[payload + 3 : payload + 6] != b"\x9d\x01\x2a":
            raise Unreadable("a lossy WebP's frame has no start code")
        return _u(data, payload + 6, 2, "little") & 0x3FFF, _u(
            data, payload + 8, 2, "little"
        ) & 0x3FFF
    if kind == b"VP8L":
        if data[payload] != 0x2F:
            raise Unreadable("a lossless WebP has no signature byte")
        bits = _u(data, payload + 1, 4, "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8X":  # extended: the canvas every frame is drawn on
        return _u(data, payload + 4, 3, "little") + 1, _u(data, payload + 7, 3, "little") + 1
    raise Unreadable("the WebP's first chunk is not VP8, VP8L or VP8X")


def _gif(data: bytes) -> Size:
    width, height = _u(data, 6, 2, "little"), _u(data, 8, 2, "little")
    flags, at = data[10], 13
    if flags & 0x80:
        at += 3 << ((flags & 7) + 1)  # the global colour table
    try:
        while data[at] != 0x3B:  # trailer
            if data[at] == 0x21:  # extension: label, then sub-blocks
                at = _skip_blocks(data, at + 2)
            elif data[at] == 0x2C:  # image descriptor: left, top, width, height
                left, top = _u(data, at + 1, 2, "little"), _u(data, at + 3, 2, "little")
                width = max(width, left + _u(data, at + 5, 2, "little"))
                height = max(height, top + _u(data, at + 7, 2, "little"))
                local = data[at + 9]
                at += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0)
                at = _skip_blocks(data, at + 1)  # after the LZW code size
            else:
                break  # not GIF any more: what a decoder would stop at too
    except IndexError:
        pass  # truncated: the frames read so far are all a decoder would draw
    return width, height


def _skip_blocks(data: bytes, at: int) -> int:
    while data[at]:
        at += data[at] + 1
    return at + 1


def _bmp(data: bytes) -> Size:
    if _u(data, 14, 4, "little") == 12:  # OS/2 BITMAPCOREHEADER
        return _u(data, 18, 2, "little"), _u(data, 20, 2, "little")
    width = int.from_bytes(data[18:22], "little", signed=True)
    height = int.from_bytes(data[22:26], "little", signed=True)  # negative: top-down
    if len(data) < 26:
        raise IndexError(26)
    return abs(width), abs(height)


def _tiff(data: bytes) -> Size:
    order = "little" if data[:2] == b"II" else "big"
    best, at, seen = (0, 0), _u(data, 4, 4, order), set[int]()
    while at and at not in seen and len(seen) < MAX_TIFF_PAGES:
        seen.add(at)
        size = {256: 0, 257: 0}  # ImageWidth, ImageLength
        count = _u(data, at, 2, order)
        for entry in range(at + 2, at + 2 + 12 * count, 12):
            tag, kind = _u(data, entry, 2, order), _u(data, entry + 2, 2, order)
            if tag in size:
                size[tag] = _u(data, entry + 8, 2 if kind == 3 else 4, order)
        if size[256] * size[257] > best[0] * best[1]:
            best = (size[256], size[257])
        at = _u(data, at + 2 + 12 * count, 4, order)
    if not best[0] * best[1]:
        raise Unreadable("the TIFF's first page gives no size")
    return best


def megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP"


@dataclass(frozen=True)
class InputCaps:
    """INPUT_MAX_MB and MAX_INPUT_PIXELS: each breach is a 400 located where the file was given."""

    max_bytes: int
    max_pixels: int

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
        """The file's bytes, then (for an image) its pixels, read from its header."""
        self.check_bytes(len(data), where)
        try:
            size = image_size(data)
        except Unreadable as e:
            raise InputError(f"{where}: not a readable image: {e}", location=where) from None
        if size is not None and size[0] * size[1] > self.max_pixels:
            pixels = size[0] * size[1]
            raise InputError(
                f"{where}: the image is {size[0]}x{size[1]} pixels ({megapixels(pixels)}); "
                f"MAX_INPUT_PIXELS allows {megapixels(self.max_pixels)}",
                location=where,
                details={
                    "limit": "MAX_INPUT_PIXELS",
                    "width": size[0],
                    "height": size[1],
                    "max_pixels": self.max_pixels,
                },
            )
