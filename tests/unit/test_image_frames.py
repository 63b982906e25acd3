"""The frames the readers count (app.media.images) against what Pillow draws when ComfyUI's
LoadImage decodes the same file frame by frame; where ffmpeg (ComfyUI 0.33 tries PyAV first)
would draw more, the readers count that. What they refuse: test_image_refusals.

ffmpeg's views asserted here were measured with PyAV 18.1 (ComfyUI 0.33's) on the same shapes
of file: concatenated PNG, JPEG, BMP or WebP images decode as one frame each; a WebP bitstream
decodes at its own size whatever the canvas; a TIFF decodes its first page only.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator

import pytest
from PIL import Image, ImageFile, ImageSequence

from app.media.frames import Frames
from app.media.images import image_frames
from tests.images import (
    apng,
    gif,
    jpeg_header,
    jpeg_with,
    mpo,
    pillow_file,
    png_with,
    tiff,
    webp_canvas_lie,
)

LIMIT = 1000


@pytest.fixture(autouse=True)
def truncated_files_load() -> Iterator[None]:
    """As ComfyUI's retry does (node_helpers.pillow): a decoder draws a truncated file whole."""
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    yield
    ImageFile.LOAD_TRUNCATED_IMAGES = False


def drawn_by_pillow(data: bytes) -> tuple[int, int]:
    """(frames, pixels) as LoadImage draws them: every frame of ImageSequence, converted."""
    image = Image.open(io.BytesIO(data))
    sizes = [frame.convert("RGB").size for frame in ImageSequence.Iterator(image)]
    return len(sizes), sum(w * h for w, h in sizes)


def counted(data: bytes, limit: int = LIMIT) -> Frames:
    found = image_frames(data, limit)
    assert found is not None
    return found[1]


def app1_thumbnail(thumbnail: bytes) -> bytes:
    return b"\xff\xe1" + struct.pack(">H", 8 + len(thumbnail)) + b"Exif\x00\x00" + thumbnail


def in_mode(mode: str, fmt: str, size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size).save(out, fmt)
    return out.getvalue()


# An EXIF block whose Orientation is 6: LoadImage's exif_transpose turns the image.
ROTATED = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06"
ROTATED += bytes(6)


def bmp_top_down(width: int, height: int) -> bytes:
    data = bytearray(pillow_file("BMP", (width, height)))
    data[22:26] = struct.pack("<i", -height)
    return bytes(data)


EXTENSIONS = b"!\xfe\x02hi\x00" + b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # comment, loop
WELL_FORMED = {
    "png-rgb": pillow_file("PNG", (123, 45)),
    "png-grey16": in_mode("I;16", "PNG", (50, 20)),
    "png-palette": in_mode("P", "PNG", (33, 7)),
    "png-text-chunks": png_with((b"tEXt", b"Comment\x00hi"), (b"zzZz", b"private")),
    "apng": pillow_file("PNG", (64, 32), (64, 32), (64, 32)),
    "apng-default-image": apng(40, 20, 3, default_image=True),
    "jpeg": pillow_file("JPEG", (123, 45)),
    "jpeg-progressive": pillow_file("JPEG", (123, 45), progressive=True),
    "jpeg-grey": in_mode("L", "JPEG", (77, 11)),
    "jpeg-cmyk": in_mode("CMYK", "JPEG", (21, 12)),
    "jpeg-restart-markers": pillow_file("JPEG", (200, 64), restart_marker_rows=1),
    "jpeg-exif-rotated": pillow_file("JPEG", (60, 20), exif=ROTATED),
    "jpeg-exif-thumbnail": jpeg_with(app1_thumbnail(pillow_file("JPEG", (16, 12)))),
    "mpo": pillow_file("MPO", (64, 32), (64, 32)),
    "mpo-sizes": pillow_file("MPO", (64, 32), (10, 10), (200, 100)),
    "gif": pillow_file("GIF", (123, 45)),
    "gif-animated": pillow_file("GIF", (64, 32), (64, 32), (64, 32)),
    "gif-canvas-grows": gif((10, 10), (10, 10), (60, 20), (30, 40)),
    "gif-comment-and-netscape": gif((16, 16), (16, 16), (16, 16), before_last=EXTENSIONS),
    "webp-lossy": pillow_file("WEBP", (123, 45)),
    "webp-lossless": pillow_file("WEBP", (123, 45), lossless=True),
    "webp-animated": pillow_file("WEBP", (64, 32), (64, 32), (64, 32)),
    "bmp": pillow_file("BMP", (123, 45)),
    "bmp-top-down": bmp_top_down(30, 20),
    "tiff": pillow_file("TIFF", (123, 45)),
    "tiff-lzw": pillow_file("TIFF", (123, 45), compression="tiff_lzw"),
    "tiff-pages": pillow_file("TIFF", (64, 32), (10, 10), (200, 100)),
    "tiff-big-endian": tiff((64, 32), (10, 10), order=">"),
    "tiff-MM*0": tiff((64, 32), (10, 10), order=">", prefix=b"MM*\x00"),
    "tiff-II0*": tiff((64, 32), (10, 10), prefix=b"II\x00*"),
    "bigtiff": tiff((64, 32), (10, 10), big=True),
    "tiff-repeated-width": tiff((64, 32), extra=((256, 4, 300),)),  # Pillow takes the first
}


@pytest.mark.parametrize("data", WELL_FORMED.values(), ids=WELL_FORMED.keys())
def test_the_readers_count_what_pillow_draws(data: bytes) -> None:
    frames = counted(data)
    assert (frames.count, frames.pixels) == drawn_by_pillow(data)


def test_an_exif_rotation_swaps_a_size_but_not_its_pixels() -> None:
    frames = counted(WELL_FORMED["jpeg-exif-rotated"])
    assert frames.largest == (60, 20) and frames.pixels == 1200  # exif_transpose: 20x60


MORE_THAN_PILLOW = {
    # ffmpeg's parsers split concatenated images into frames; Pillow reads the first.
    "png+png": (pillow_file("PNG", (40, 30)) + pillow_file("PNG", (300, 200)), 2, 61200),
    "jpeg+jpeg": (pillow_file("JPEG", (40, 30)) + pillow_file("JPEG", (300, 200)), 2, 61200),
    "jpeg+junk+jpeg": (
        pillow_file("JPEG", (40, 30)) + b"junk" + pillow_file("JPEG", (300, 200)),
        2,
        61200,
    ),
    "bmp+bmp": (pillow_file("BMP", (40, 30)) + pillow_file("BMP", (300, 200)), 2, 61200),
    "webp+webp": (pillow_file("WEBP", (40, 30)) + pillow_file("WEBP", (300, 200)), 2, 61200),
    "mpo+jpeg": (
        pillow_file("MPO", (40, 30), (40, 30)) + pillow_file("JPEG", (300, 200)),
        3,
        62400,
    ),
    # ffmpeg draws a TIFF thumbnail page's SubIFD, and a WebP bitstream at its own size.
    "tiff-sub-ifd": (tiff((40, 30), sub_ifd=(300, 200)), 1, 60000),
    "webp-canvas-lies": (webp_canvas_lie((40, 30), (300, 200)), 1, 60000),
    # Pillow keeps the last IHDR and SOFn, libpng and libjpeg the first: the largest counts.
    "png-second-ihdr-smaller": (
        png_with(
            (b"IHDR", struct.pack(">IIBBBBB", 4, 3, 8, 2, 0, 0, 0)),
            base=pillow_file("PNG", (300, 200)),
        ),
        1,
        60000,
    ),
    "jpeg-second-sof-smaller": (
        jpeg_with(jpeg_header(300, 200)[2:-2], base=pillow_file("JPEG", (40, 30))),
        1,
        60000,
    ),
}


@pytest.mark.parametrize(
    ("data", "count", "pixels"), MORE_THAN_PILLOW.values(), ids=MORE_THAN_PILLOW.keys()
)
@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns of some of these files
def test_where_decoders_differ_the_readers_count_the_most(
    data: bytes, count: int, pixels: int
) -> None:
    frames = counted(data)
    assert (frames.count, frames.pixels) == (count, pixels)
    try:
        drawn = drawn_by_pillow(data)
    except OSError:
        return  # libwebp refuses the lying canvas; ffmpeg does not
    assert frames.count >= drawn[0] and frames.pixels >= drawn[1]


def test_a_gif_frame_after_an_unknown_block_counts() -> None:
    """Issue 20's case: the old reader stopped at the unknown block; Pillow reads on."""
    for gap in (b"\x00\x99junk", b"!\x77\x03abc\x00", b"\x00"):
        data = gif((32, 32), (32, 32), (300, 200), before_last=gap)
        assert drawn_by_pillow(data) == (2, 32 * 32 + 300 * 200)
        frames = counted(data)
        assert (frames.count, frames.pixels) == (2, 32 * 32 + 300 * 200)


def test_pillow_skips_what_an_empty_extension_hides_and_so_does_the_reader() -> None:
    """After an extension's first sub-block Pillow reads sub-blocks to an empty one, even when
    the first was empty: the next frame's bytes are read as sub-blocks."""
    data = gif((32, 32), (32, 32), (300, 200), before_last=b"!\xf9\x00")
    assert drawn_by_pillow(data) == (1, 32 * 32) == (counted(data).count, counted(data).pixels)


def test_a_tiff_page_after_the_thousandth_counts() -> None:
    """Issue 20's case: the old reader read 1000 pages and stopped."""
    data = tiff(*[(1, 1)] * 1200, (3000, 2000))
    frames = counted(data, limit=5000)
    assert (frames.count, frames.pixels) == (1201, 1200 + 3000 * 2000)
    assert Image.open(io.BytesIO(data)).n_frames == 1201


def test_the_second_image_of_an_mpo_counts() -> None:
    """Issue 20's case: the old reader read the first image's frame header only."""
    data = mpo((64, 32), (64, 32), declared=(6000, 4000))
    image = Image.open(io.BytesIO(data))
    image.seek(1)
    assert image.size == (6000, 4000)
    frames = counted(data)
    assert (frames.count, frames.pixels) == (2, 64 * 32 + 6000 * 4000)


def test_an_apng_counts_every_frame_on_the_canvas() -> None:
    frames = counted(apng(2048, 2048, 50))
    assert (frames.count, frames.pixels) == (50, 50 * 2048 * 2048)


@pytest.mark.parametrize(
    "data",
    [
        gif((1, 1), *[(1, 1)] * 5000),
        tiff(*[(1, 1)] * 5000),
        b"".join([pillow_file("JPEG", (8, 8))] * 500),
        b"".join([pillow_file("PNG", (8, 8))] * 500),
    ],
    ids=["gif", "tiff", "jpeg-concatenated", "png-concatenated"],
)
def test_reading_stops_past_the_frame_limit(data: bytes) -> None:
    assert counted(data, limit=100).count == 101


def test_a_truncated_animation_counts_the_frames_it_holds() -> None:
    data = gif((32, 32), (32, 32), (32, 32), (32, 32))
    cut = data[: data.rindex(b"\x2c") + 12]  # the last frame's data cut short
    assert counted(cut).count == 3 == drawn_by_pillow(cut)[0]
