"""Image files for tests, written byte by byte: decompression bombs of every format the input
caps read, headers that lie, formats the gateway refuses; and files Pillow writes.

A bomb is a real, valid PNG whose pixels are never allocated here: its rows are fed to zlib one
at a time (1-bit grey, so 20000x20000 is 50 MB of rows and about 48 KB of file). The others
declare their sizes and carry a pixel or a row of data: a decoder draws the rest as truncated,
at the declared size (as ComfyUI's retry with LOAD_TRUNCATED_IMAGES does).
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

from PIL import Image


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid black 1-bit PNG of width x height pixels, compressed row by row."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter type 0, then the row's bits
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", body)
        + _chunk(b"IEND", b"")
    )


def jpeg_header(width: int, height: int) -> bytes:
    """The start of a baseline JPEG: SOI, an APP0 segment, then a frame header (SOF0)."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xda"


def gif_with_a_frame_past_the_screen(screen: int, frame: int) -> bytes:
    """A GIF whose logical screen is screen x screen, and whose one frame is frame x frame."""
    head = b"GIF89a" + struct.pack("<HHBBB", screen, screen, 0, 0, 0)
    descriptor = b"\x2c" + struct.pack("<HHHHB", 0, 0, frame, frame, 0)
    return head + descriptor + b"\x02\x02\x4c\x01\x00" + b"\x3b"


def webp_vp8x(width: int, height: int) -> bytes:
    """An extended WebP's header: a canvas of width x height, and nothing drawn on it."""
    payload = b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little")
    payload += (height - 1).to_bytes(3, "little")
    chunk = b"VP8X" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


# --- files Pillow writes, and bombs of every format (issue 20, class 7) --------------------------


def pillow_file(fmt: str, *sizes: tuple[int, int], **options: Any) -> bytes:
    """A file Pillow writes: one frame per size (several: an animation, pages, an MPO)."""
    frames = [Image.new("RGB", size, (40 * i % 256, 90, 160)) for i, size in enumerate(sizes)]
    out = io.BytesIO()
    if len(frames) > 1:
        options = {"save_all": True, "append_images": frames[1:], **options}
    frames[0].save(out, fmt, **options)
    return out.getvalue()


def apng(width: int, height: int, frames: int, *, default_image: bool = False) -> bytes:
    """An APNG of `frames` frames on a width x height canvas (each frame's data a single row:
    a decoder draws the rest as if truncated); with `default_image`, the IDAT image comes
    before the first fcTL and is no frame of the animation."""
    row = zlib.compress(b"\x00" + bytes(width // 8 + 1))
    out = b"\x89PNG\r\n\x1a\n" + _chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    )
    out += _chunk(b"acTL", struct.pack(">II", frames, 0))
    sequence = 0
    if default_image:
        out += _chunk(b"IDAT", row)
    for i in range(frames):
        control = struct.pack(">IIIIIHHBB", sequence, width, height, 0, 0, 1, 10, 0, 0)
        out += _chunk(b"fcTL", control)
        sequence += 1
        if i == 0 and not default_image:
            out += _chunk(b"IDAT", row)
        else:
            out += _chunk(b"fdAT", struct.pack(">I", sequence) + row)
            sequence += 1
    return out + _chunk(b"IEND", b"")


def gif(screen: tuple[int, int], *frames: tuple[int, int], before_last: bytes = b"") -> bytes:
    """A GIF of frames of those sizes (each one pixel of LZW data), with `before_last` bytes
    between the last two frames (Pillow skips unknown bytes and reads on)."""
    head = b"GIF89a" + struct.pack("<HHBBB", *screen, 0, 0, 0)
    descriptors = [
        b"\x2c" + struct.pack("<HHHHB", 0, 0, *size, 0) + b"\x02\x02\x4c\x01\x00" for size in frames
    ]
    body = b"".join(descriptors[:-1]) + before_last + descriptors[-1]
    return head + body + b"\x3b"


def tiff(
    *sizes: tuple[int, int],
    order: str = "<",
    prefix: bytes | None = None,
    big: bool = False,
    sub_ifd: tuple[int, int] | None = None,
    extra: tuple[tuple[int, int, int], ...] = (),
) -> bytes:
    """A TIFF of one 8-bit grey page per size, chained (each page's one strip the same byte):
    `prefix` replaces the first four bytes (Pillow reads six kinds), `big` writes BigTIFF, the
    first page gets a SubIFD of size `sub_ifd` (where a DNG keeps its raw image) and the
    `extra` entries (tag, type, value) before its own."""
    pack = lambda form, *values: struct.pack(order + form, *values)  # noqa: E731
    count_form, entry_form, offset_form = ("Q", "HHQ", "Q") if big else ("H", "HHI", "I")
    field_size = 8 if big else 4
    pages = [*sizes, *([sub_ifd] if sub_ifd else [])]
    directories = []
    for i, (width, height) in enumerate(pages):
        entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1),
                   (273, 4, 8), (278, 4, height), (279, 4, 1)]  # fmt: skip
        if i == 0:
            entries = [*extra, *entries, *([(330, 4, 0)] if sub_ifd else [])]
        directories.append(entries)
    header = 16 if big else 8
    positions, at = [], header + 2  # the strip's byte at `header`
    for entries in directories:
        positions.append(at)
        at += (
            struct.calcsize(count_form)
            + len(entries) * (4 + struct.calcsize(offset_form) + field_size)
            + field_size
        )
    magic = prefix or ((b"II+\x00" if big else b"II*\x00") if order == "<" else b"MM\x00*")
    out = bytearray(magic + (pack("HHQ", 8, 0, positions[0]) if big else pack("I", positions[0])))
    out += b"\x80\x00"
    for i, entries in enumerate(directories):
        out += pack(count_form, len(entries))
        for tag, kind, value in entries:
            value = positions[-1] if tag == 330 else value
            field = (
                pack("H", value) + bytes(field_size - 2) if kind == 3 else pack(offset_form, value)
            )
            out += pack(entry_form, tag, kind, 1) + field.ljust(field_size, b"\x00")
        chained = i < len(sizes) - 1
        out += pack(offset_form, positions[i + 1] if chained else 0)
    return bytes(out)


def mpo(*sizes: tuple[int, int], declared: tuple[int, int] | None = None) -> bytes:
    """An MPO Pillow writes, one image per size; `declared` rewrites the last image's frame
    header to say that size (its data stays as small: the header lies)."""
    data = bytearray(pillow_file("MPO", *sizes))
    if declared:
        at = data.rindex(b"\xff\xc0")
        data[at + 5 : at + 9] = struct.pack(">HH", declared[1], declared[0])
    return bytes(data)


def webp_canvas_lie(canvas: tuple[int, int], bitstream: tuple[int, int]) -> bytes:
    """A still WebP whose extended header declares one canvas and whose lossless bitstream
    another size (ffmpeg decodes the bitstream's; libwebp refuses the file)."""
    vp8x = b"\x00\x00\x00\x00" + (canvas[0] - 1).to_bytes(3, "little")
    vp8x += (canvas[1] - 1).to_bytes(3, "little")
    bits = (bitstream[0] - 1) | (bitstream[1] - 1) << 14
    vp8l = b"\x2f" + struct.pack("<I", bits) + bytes(5)
    chunks = _riff_chunk(b"VP8X", vp8x) + _riff_chunk(b"VP8L", vp8l)
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks


def _riff_chunk(kind: bytes, data: bytes) -> bytes:
    return kind + struct.pack("<I", len(data)) + data + b"\x00" * (len(data) & 1)


def ico_lying(declared: int, inside: bytes) -> bytes:
    """An ICO whose one entry says declared x declared and holds the PNG `inside` (Pillow draws
    the PNG's own size)."""
    entry = struct.pack("<BBBBHHII", declared % 256, declared % 256, 0, 0, 1, 32, len(inside), 22)
    return struct.pack("<HHH", 0, 1, 1) + entry + inside


def tga_header(width: int, height: int) -> bytes:
    """A grey TGA's header (Pillow's TGA reader has no signature to test: it reads any file
    whose first bytes make such a header)."""
    return struct.pack("<BBBHHBHHHHBB", 0, 0, 3, 0, 0, 0, 0, 0, width, height, 8, 0x20) + bytes(64)


def dib_header(width: int, height: int) -> bytes:
    """A bare BITMAPINFOHEADER: Pillow reads a file starting so as a DIB."""
    return struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 0, 0, 0, 0) + bytes(64)


def gif_im_polyglot(width: int, height: int) -> bytes:
    """A 32x32 GIF whose colour table makes its first bytes an IM header too: Pillow's IM
    reader, where it comes first, reads a width x height image."""
    text = f": gif\r\nImage type: L image\r\nImage size (x*y): {width}*{height}\r\n\x1a".encode()
    head = b"GIF89a" + struct.pack("<HHBBB", 32, 32, 0x87, 0, 0) + text.ljust(768, b"\x00")
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 32, 32, 0) + b"\x02\x02\x4c\x01\x00"
    return head + frame + b"\x3b"


def png_with(*chunks: tuple[bytes, bytes], base: bytes | None = None) -> bytes:
    """A PNG (by default a 40x30 one Pillow writes) with chunks added right after its IHDR."""
    base = base or pillow_file("PNG", (40, 30))
    extra = b"".join(
        struct.pack(">I", len(body)) + name + body + struct.pack(">I", zlib.crc32(name + body))
        for name, body in chunks
    )
    return base[:33] + extra + base[33:]


def jpeg_with(segment: bytes, base: bytes | None = None) -> bytes:
    """A JPEG with a segment added right after its SOI."""
    base = base or pillow_file("JPEG", (40, 30))
    return base[:2] + segment + base[2:]
