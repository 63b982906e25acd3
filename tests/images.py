"""Image files for tests, written byte by byte: a decompression bomb, and headers that lie.

A bomb is a real, valid PNG whose pixels are never allocated here: its rows are fed to zlib one
at a time (1-bit grey, so 20000x20000 is 50 MB of rows and about 48 KB of file).
"""

from __future__ import annotations

import struct
import zlib


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
