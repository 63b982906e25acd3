"""What the readers refuse (app.media.images): images in the formats they do not read,
and structures that are broken or would take long to walk; and what is no image at all."""

from __future__ import annotations

import struct

import pytest

from app.media.frames import Unreadable
from app.media.images import NotAccepted, image_frames
from tests.images import (
    bomb_png,
    dib_header,
    gif,
    gif_im_polyglot,
    ico_lying,
    jpeg_header,
    jpeg_with,
    pillow_file,
    png_with,
    tga_header,
)

LIMIT = 1000


REFUSED_FORMATS = {
    "ICO": ico_lying(16, bomb_png(300, 200)),  # its entry says 16x16; Pillow draws 300x200
    "ICNS": pillow_file("ICNS", (64, 64)),
    "PCX": pillow_file("PCX", (64, 64)),
    "PPM": pillow_file("PPM", (64, 64)),
    "QOI": pillow_file("QOI", (64, 64)),
    "SGI": pillow_file("SGI", (64, 64)),
    "DDS": pillow_file("DDS", (64, 64)),
    "TGA": tga_header(300, 200),
    "DIB": dib_header(300, 200),
    "PSD": b"8BPS\x00\x01" + bytes(6) + struct.pack(">HIIHH", 3, 200, 300, 8, 3) + bytes(12),
    "IM": gif_im_polyglot(8000, 8000),  # a GIF too: which reader wins depends on import order
}


@pytest.mark.parametrize("data", REFUSED_FORMATS.values(), ids=REFUSED_FORMATS.keys())
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Pillow's IM reader: deprecated
def test_formats_the_readers_do_not_know_are_refused(
    data: bytes, request: pytest.FixtureRequest
) -> None:
    name = request.node.callspec.id
    with pytest.raises(NotAccepted, match=f"Pillow reads it as {name}"):
        image_frames(data, LIMIT)


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image at all", b"RIFF\x00\x00\x00\x00WAVEfmt ", b"\x1a\x45\xdf\xa3webm",
     b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00", b"ID3\x04\x00", b"fLaC\x00", b"OggS\x00"],
    ids=["empty", "text", "wav", "webm", "mp4", "mp3", "flac", "ogg"],
)  # fmt: skip
def test_a_file_that_is_no_image_has_no_frames(data: bytes) -> None:
    assert image_frames(data, LIMIT) is None


def tiff_overlapping(count: int) -> bytes:
    """A TIFF whose second directory starts inside its first (in the padding of its width
    entry) and reads the same entries again: a small file, walked twice over."""
    entries = struct.pack("<HHIHH", 256, 3, 1, 8, count - 1) + struct.pack(
        "<HHIHH", 257, 3, 1, 8, 0
    )
    entries += struct.pack("<HHII", 65000, 7, 1, 0) * (count - 2)
    return b"II*\x00" + struct.pack("<IH", 8, count) + entries + struct.pack("<I", 20)


HOSTILE = {
    "gif-one-byte-sub-blocks": gif((8, 8), (8, 8)).replace(
        b"\x02\x02\x4c\x01\x00", b"\x02" + b"\x01\x00" * 400_000 + b"\x00", 1
    ),
    "tiff-overlapping-directories": tiff_overlapping(1000),
    "png-tiny-chunks": png_with(*[(b"tEXt", b"")] * 210_000),
    "jpeg-tiny-segments": jpeg_with(b"\xff\xfe\x00\x02" * 20_000),
    "jpeg-tiny-segments-after-the-scan": pillow_file("JPEG", (8, 8))
    + b"\xff\xfe\x00\x02" * 300_000,
}


@pytest.mark.parametrize("data", HOSTILE.values(), ids=HOSTILE.keys())
def test_structures_that_would_take_long_to_walk_are_refused(data: bytes) -> None:
    with pytest.raises(Unreadable):
        image_frames(data, LIMIT)


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n\x00\x00",  # ends before IHDR
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIDAT" + bytes(13),  # not IHDR first
        bomb_png()[:40],  # ends before the image data
        b"\xff\xd8\xff\xe0\x00\x10JFIF",  # no frame header before the end
        jpeg_header(640, 0),  # the height would come later, in a DNL marker
        pillow_file("JPEG", (8, 8)) + jpeg_header(640, 0),  # so in a further image
        b"\xff\xd8\xff\xda\x00\x02",  # a scan before any frame header
        b"\xff\xd8\xff\xe0\x00\x00",  # a segment shorter than its length field
        b"\xff\xd8\xff\xe0\x00\x04ab" + b"junk" + jpeg_header(9000, 9000)[20:],  # junk: refused
        b"RIFF\x10\x00\x00\x00WEBPVP8 \x04\x00\x00\x00abcd",  # no start code
        b"RIFF\x10\x00\x00\x00WEBPALPH\x04\x00\x00\x00abcd",  # not a first chunk
        b"II*\x00\x08\x00\x00\x00\x00\x00",  # a TIFF page with no size
        b"GIF89a\x01",  # ends in the screen descriptor
        b"BM" + bytes(12) + struct.pack("<I", 99) + bytes(20),  # an unknown BMP header
    ],
    ids=["png-short", "png-no-ihdr", "png-no-image-data", "jpeg-no-sof", "jpeg-dnl",
         "jpeg-dnl-later", "jpeg-scan-first", "jpeg-short-segment", "jpeg-junk",
         "webp-no-start-code", "webp-odd-chunk", "tiff-no-size", "gif-short", "bmp-odd-header"],
)  # fmt: skip
def test_a_broken_structure_is_unreadable(data: bytes) -> None:
    with pytest.raises(Unreadable):
        image_frames(data, LIMIT)
