"""Input caps: the located 400s for too many bytes, too many pixels over all of an image's
frames, too many frames, a format the gateway does not read, and a broken structure; a bomb of
every kind refused without decoding it (what the readers count: test_image_frames)."""

from __future__ import annotations

import asyncio
import base64
import time
import tracemalloc

import pytest

from app.core.errors import InputError
from app.core.settings import Settings
from app.media.caps import INLINE_CHECK_BYTES, InputCaps
from tests.images import (
    apng,
    bomb_png,
    dib_header,
    gif,
    gif_im_polyglot,
    gif_with_a_frame_past_the_screen,
    ico_lying,
    jpeg_header,
    mpo,
    pillow_file,
    tga_header,
    tiff,
    webp_canvas_lie,
    webp_vp8x,
)

CAPS = InputCaps(max_bytes=1_000_000, max_pixels=4096 * 4096, max_frames=1000)


def refusal(caps: InputCaps, data: bytes, where: str = "prompt.1.inputs.image") -> InputError:
    with pytest.raises(InputError) as refused:
        caps.check(data, where)
    error = refused.value
    assert (error.status, error.code, error.location) == (400, "invalid_input", where)
    assert error.message.startswith(f"{where}: ")
    return error


def test_the_caps_come_from_the_settings() -> None:
    settings = Settings(input_max_mb=2, max_input_pixels=1000, max_input_frames=7)
    assert InputCaps.from_settings(settings) == InputCaps(2 * 2**20, 1000, 7)
    assert Settings().max_input_frames == 1000


def test_too_many_pixels_is_a_located_400() -> None:
    error = refusal(CAPS, bomb_png(), "prompt.7.inputs.image")
    assert "20000x20000" in error.message and "MAX_INPUT_PIXELS" in error.message
    assert error.details == {
        "limit": "MAX_INPUT_PIXELS", "width": 20000, "height": 20000, "frames": 1,
        "pixels": 20000 * 20000, "max_pixels": 4096 * 4096,
    }  # fmt: skip


def test_the_pixel_cap_holds_for_the_sum_over_frames() -> None:
    """ComfyUI stacks every frame: four frames each under the cap are refused together."""
    caps = InputCaps(max_bytes=10**7, max_pixels=100 * 100, max_frames=1000)
    caps.check(gif((100, 100), (100, 100)), "image")  # one frame at the cap
    error = refusal(caps, gif((100, 100), *[(60, 60)] * 4), "image")
    assert "4 frames are 0.0 MP in all (the largest 100x100)" in error.message
    assert error.details is not None
    assert (error.details["frames"], error.details["pixels"]) == (4, 4 * 100 * 100)


def test_too_many_frames_is_a_located_400() -> None:
    caps = InputCaps(max_bytes=10**7, max_pixels=10**9, max_frames=50)
    caps.check(gif((1, 1), *[(1, 1)] * 50), "files.anim.gif")
    error = refusal(caps, gif((1, 1), *[(1, 1)] * 51), "files.anim.gif")
    assert "more than 50 frames" in error.message and "MAX_INPUT_FRAMES" in error.message
    assert error.details == {"limit": "MAX_INPUT_FRAMES", "max_frames": 50}


BOMBS = {
    # Issue 20's cases: a frame after an unknown GIF block, a TIFF page after the 1000th
    # (MAX_INPUT_FRAMES raised to reach it), an MPO's second image.
    "gif-frame-after-unknown-block": gif((32, 32), (32, 32), (9000, 9000), before_last=b"\x00junk"),
    "tiff-page-after-the-1000th": tiff(*[(1, 1)] * 1100, (9000, 9000)),
    "mpo-second-image": mpo((64, 32), (64, 32), declared=(9000, 9000)),
    # Their siblings.
    "png": bomb_png(),
    "png-two-ihdr": bomb_png(64, 64)[:33] + bomb_png(9000, 9000)[8:33] + bomb_png(64, 64)[33:],
    "png-concatenated": pillow_file("PNG", (64, 64)) + bomb_png(9000, 9000),
    "apng-frames": apng(2048, 2048, 8),
    "jpeg": jpeg_header(30000, 20000),
    "jpeg-second-sof": jpeg_header(64, 64)[:-2] + jpeg_header(9000, 9000)[20:],
    "jpeg-concatenated": pillow_file("JPEG", (64, 64)) + jpeg_header(9000, 9000),
    "gif-frame-past-the-screen": gif_with_a_frame_past_the_screen(10, 30000),
    "gif-frames": gif((2048, 2048), *[(2048, 2048)] * 8),
    "webp-canvas": webp_vp8x(16384, 16384),
    "webp-bitstream-past-the-canvas": webp_canvas_lie((64, 64), (9000, 9000)),
    "webp-frames": pillow_file("WEBP", *[(2000, 2000)] * 6, lossless=True),
    "bmp-concatenated": pillow_file("BMP", (8, 8)) + b"BM" + bytes(12) + dib_header(9000, 9000),
    "tiff-repeated-width": tiff((64, 64), extra=((256, 4, 900_000),)),
    "tiff-sub-ifd": tiff((64, 64), sub_ifd=(9000, 9000)),
    "tiff-MM*0": tiff((9000, 9000), order=">", prefix=b"MM*\x00"),
    "bigtiff": tiff((9000, 9000), big=True),
    "ico-lying-entry": ico_lying(16, bomb_png(9000, 9000)),
    "tga": tga_header(9000, 9000),
    "gif-im-polyglot": gif_im_polyglot(9000, 9000),
}


@pytest.mark.parametrize("data", BOMBS.values(), ids=BOMBS.keys())
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Pillow's IM reader: deprecated
def test_a_bomb_of_every_kind_is_a_located_400(data: bytes) -> None:
    caps = InputCaps(max_bytes=10**7, max_pixels=4096 * 4096, max_frames=2000)
    assert len(data) < 1_000_000  # small files all: the size is what they declare
    error = refusal(caps, data, "files.x")
    assert error.details is not None and error.details["limit"] in (
        "MAX_INPUT_PIXELS",
        "image format",
    )


def test_the_bomb_is_read_without_decoding_it() -> None:
    bomb = bomb_png()
    assert len(bomb) < 64 * 1024  # about 48 KB for 400 million pixels
    CAPS.check(pillow_file("PNG", (8, 8)), "warm")  # Pillow's readers imported
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(InputError):
        CAPS.check(bomb, "image")
    elapsed_s = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 64 * 1024  # decoding would take 50 MB as 1-bit, 1.2 GB as RGB
    assert elapsed_s < 0.05


def test_a_format_the_gateway_does_not_read_is_a_located_400() -> None:
    error = refusal(CAPS, pillow_file("ICO", (64, 64)), "image")
    assert (
        "Pillow reads it as ICO" in error.message
        and "PNG, JPEG, GIF, WebP, BMP or TIFF" in error.message
    )
    assert error.details == {"limit": "image format"}


@pytest.mark.parametrize(
    "data",
    [b"not an image at all", b"RIFF\x00\x00\x00\x00WAVEfmt ", b"\x1a\x45\xdf\xa3webm", b""],
    ids=["text", "wav", "webm", "empty"],
)
def test_other_files_are_held_to_their_bytes_only(data: bytes) -> None:
    CAPS.check(data, "prompt.1.inputs.audio")


def test_a_broken_structure_is_a_located_400() -> None:
    error = refusal(CAPS, jpeg_header(640, 0), "prompt.3.inputs.image")
    assert "not a readable image" in error.message


def test_a_4k_frame_fits_the_default() -> None:
    default = InputCaps.from_settings(Settings())
    default.check(jpeg_header(3840, 2160), "image")  # UHD
    default.check(jpeg_header(4096, 2160), "image")  # DCI 4K
    with pytest.raises(InputError):
        default.check(jpeg_header(7680, 4320), "image")  # 8K


def test_too_many_bytes_is_a_located_400() -> None:
    caps = InputCaps(max_bytes=1000, max_pixels=10**9, max_frames=1000)
    error = refusal(caps, b"x" * 1001, "files.big.png")
    assert error.details == {"limit": "INPUT_MAX_MB", "bytes": 1001, "max_bytes": 1000}
    caps.check(b"x" * 1000, "files.ok.png")


def test_base64_far_over_the_cap_is_refused_before_decoding() -> None:
    caps = InputCaps(max_bytes=10_000, max_pixels=10**9, max_frames=1000)
    huge = base64.b64encode(bytes(100_000)).decode()
    with pytest.raises(InputError) as refused:
        caps.check_base64(huge, "prompt.1.inputs.image")
    assert refused.value.location == "prompt.1.inputs.image"
    caps.check_base64(base64.b64encode(bytes(10_000)).decode(), "prompt.1.inputs.image")


@pytest.mark.parametrize("padding", [0, INLINE_CHECK_BYTES], ids=["inline", "worker-thread"])
def test_off_the_event_loop_the_check_is_the_same(padding: int) -> None:
    """A large file is read in a worker thread: the same answer, the same located 400."""
    caps = InputCaps(max_bytes=10**7, max_pixels=4096 * 4096, max_frames=1000)
    fits = pillow_file("PNG", (64, 64)) + bytes(padding)
    bomb = bomb_png() + bytes(padding)
    asyncio.run(caps.check_off_loop(fits, "image"))
    with pytest.raises(InputError) as refused:
        asyncio.run(caps.check_off_loop(bomb, "image"))
    assert refused.value.location == "image" and "20000x20000" in refused.value.message
