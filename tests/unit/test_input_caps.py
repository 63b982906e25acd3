"""Input caps: image sizes read from headers alone, for each format; the located 400s."""

from __future__ import annotations

import base64
import io
import time
import tracemalloc
from typing import Any

import pytest
from PIL import Image

from app.core.errors import InputError
from app.jobs.input_caps import InputCaps, Unreadable, image_size
from tests.images import bomb_png, gif_with_a_frame_past_the_screen, jpeg_header, webp_vp8x

CAPS = InputCaps(max_bytes=1_000_000, max_pixels=4096 * 4096)


def saved(fmt: str, size: tuple[int, int] = (123, 45), **options: Any) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(out, fmt, **options)
    return out.getvalue()


def animated(fmt: str, sizes: list[tuple[int, int]]) -> bytes:
    frames = [Image.new("RGB", size, (i * 40, 0, 0)) for i, size in enumerate(sizes)]
    out = io.BytesIO()
    frames[0].save(out, fmt, save_all=True, append_images=frames[1:])
    return out.getvalue()


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (saved("PNG"), (123, 45)),
        (saved("JPEG"), (123, 45)),
        (saved("JPEG", progressive=True), (123, 45)),
        (saved("WEBP"), (123, 45)),  # lossy: VP8
        (saved("WEBP", lossless=True), (123, 45)),  # VP8L
        (animated("WEBP", [(64, 32), (64, 32)]), (64, 32)),  # VP8X: the canvas
        (saved("GIF"), (123, 45)),
        (animated("GIF", [(64, 32), (64, 32)]), (64, 32)),
        (saved("BMP"), (123, 45)),
        (saved("TIFF"), (123, 45)),
        (saved("TIFF", compression="tiff_lzw"), (123, 45)),
        (animated("TIFF", [(64, 32), (200, 100)]), (200, 100)),  # the largest page
        (bomb_png(), (20000, 20000)),
        (jpeg_header(30000, 20000), (30000, 20000)),
        (webp_vp8x(16384, 16384), (16384, 16384)),
        (gif_with_a_frame_past_the_screen(10, 30000), (30000, 30000)),  # Pillow grows the canvas
    ],
    ids=["png", "jpeg", "jpeg-progressive", "webp-lossy", "webp-lossless", "webp-animated",
         "gif", "gif-animated", "bmp", "tiff", "tiff-lzw", "tiff-pages", "png-bomb",
         "jpeg-header", "webp-vp8x-header", "gif-frame-past-screen"],
)  # fmt: skip
def test_size_comes_from_the_header(data: bytes, size: tuple[int, int]) -> None:
    assert image_size(data) == size
    if max(size) < 1000:  # what Pillow, decoding, would say
        assert max(Image.open(io.BytesIO(data)).size) <= max(size)


def test_the_bomb_is_read_without_decoding_it() -> None:
    bomb = bomb_png()
    assert len(bomb) < 64 * 1024  # about 48 KB for 400 million pixels
    tracemalloc.start()
    started = time.perf_counter()
    assert image_size(bomb) == (20000, 20000)
    elapsed_s = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 64 * 1024  # decoding would take 50 MB as 1-bit, 1.2 GB as RGB
    assert elapsed_s < 0.05


@pytest.mark.parametrize(
    "data",
    [b"not an image at all", b"RIFF\x00\x00\x00\x00WAVEfmt ", b"\x1a\x45\xdf\xa3webm", b""],
    ids=["text", "wav", "webm", "empty"],
)
def test_other_files_have_no_image_size(data: bytes) -> None:
    assert image_size(data) is None
    CAPS.check(data, "prompt.1.inputs.audio")  # nothing to count: only the bytes are capped


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n\x00\x00",  # ends before IHDR
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIDAT" + bytes(13),  # not IHDR first
        b"\xff\xd8\xff\xe0\x00\x10JFIF",  # no frame header before the end
        jpeg_header(640, 0),  # the height would come later, in a DNL marker
        b"\xff\xd8\xff\xda\x00\x02",  # a scan before any frame header
        b"RIFF\x10\x00\x00\x00WEBPVP8 \x04\x00\x00\x00abcd",  # no start code
        b"RIFF\x10\x00\x00\x00WEBPALPH\x04\x00\x00\x00abcd",  # not a first chunk
        b"II*\x00\x08\x00\x00\x00\x00\x00",  # a TIFF page with no size
    ],
    ids=["png-short", "png-no-ihdr", "jpeg-no-sof", "jpeg-dnl", "jpeg-scan-first",
         "webp-no-start-code", "webp-odd-chunk", "tiff-no-size"],
)  # fmt: skip
def test_a_broken_header_is_unreadable(data: bytes) -> None:
    with pytest.raises(Unreadable):
        image_size(data)
    with pytest.raises(InputError) as refused:
        CAPS.check(data, "prompt.3.inputs.image")
    assert refused.value.location == "prompt.3.inputs.image"


def test_too_many_pixels_is_a_located_400() -> None:
    with pytest.raises(InputError) as refused:
        CAPS.check(bomb_png(), "prompt.7.inputs.image")
    error = refused.value
    assert (error.status, error.code, error.location) == (
        400,
        "invalid_input",
        "prompt.7.inputs.image",
    )
    assert "20000x20000" in error.message and "MAX_INPUT_PIXELS" in error.message
    assert error.details == {
        "limit": "MAX_INPUT_PIXELS", "width": 20000, "height": 20000, "max_pixels": 4096 * 4096,
    }  # fmt: skip


def test_a_4k_frame_fits_the_default() -> None:
    default = InputCaps(max_bytes=100 * 2**20, max_pixels=4096 * 4096)
    default.check(jpeg_header(3840, 2160), "image")  # UHD
    default.check(jpeg_header(4096, 2160), "image")  # DCI 4K
    with pytest.raises(InputError):
        default.check(jpeg_header(7680, 4320), "image")  # 8K


def test_too_many_bytes_is_a_located_400() -> None:
    caps = InputCaps(max_bytes=1000, max_pixels=10**9)
    with pytest.raises(InputError) as refused:
        caps.check(b"x" * 1001, "files.big.png")
    assert refused.value.location == "files.big.png"
    assert refused.value.details == {"limit": "INPUT_MAX_MB", "bytes": 1001, "max_bytes": 1000}
    caps.check(b"x" * 1000, "files.ok.png")


def test_base64_far_over_the_cap_is_refused_before_decoding() -> None:
    caps = InputCaps(max_bytes=10_000, max_pixels=10**9)
    huge = base64.b64encode(bytes(100_000)).decode()
    with pytest.raises(InputError) as refused:
        caps.check_base64(huge, "prompt.1.inputs.image")
    assert refused.value.location == "prompt.1.inputs.image"
    caps.check_base64(base64.b64encode(bytes(10_000)).decode(), "prompt.1.inputs.image")
