"""Thumbnails of finished jobs' images (app.media.thumbnail, app.console.thumbnails): small,
bounded before decoding, made once and kept within their memory; an error shown on the page is
cut to its bound."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from app.console.state import TEXT_MAX, error_view
from app.console.thumbnails import CACHE_BYTES, MAX_FILE_BYTES, Thumbnails
from app.core.errors import NotFound
from app.core.outcome import JobOutcome, ResultFile
from app.media.thumbnail import MAX_PIXELS, SIDE_PX, NoThumbnail, thumbnail


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header says width x height, with no pixels after it."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", b"")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


@pytest.mark.parametrize(
    ("size", "mode", "fmt", "expected"),
    [
        ((1024, 512), "RGB", "PNG", (256, 128)),
        ((300, 900), "RGBA", "PNG", (85, 256)),
        ((2048, 2048), "RGB", "JPEG", (256, 256)),
        ((64, 48), "P", "PNG", (64, 48)),  # small ones are not enlarged
        ((640, 640), "RGB", "WEBP", (256, 256)),
    ],
)
def test_a_thumbnail_is_a_jpeg_within_its_side_keeping_the_ratio(
    size: tuple[int, int], mode: str, fmt: str, expected: tuple[int, int]
) -> None:
    made = thumbnail(encoded(Image.new(mode, size), fmt))
    with Image.open(io.BytesIO(made)) as shown:
        assert shown.format == "JPEG" and shown.mode == "RGB"
        assert shown.size == expected and max(shown.size) <= SIDE_PX


def test_an_image_too_large_is_refused_from_its_header_alone() -> None:
    side = int(MAX_PIXELS**0.5) + 1
    with pytest.raises(NoThumbnail, match=f"{side}x{side} is too large"):
        thumbnail(png_claiming(side, side))  # no pixels: decoding them would fail otherwise


@pytest.mark.parametrize("data", [b"", b"plain text", png_claiming(64, 64)])
def test_bytes_that_are_no_readable_image_get_no_thumbnail(data: bytes) -> None:
    with pytest.raises(NoThumbnail):
        thumbnail(data)


def outcome(*files: ResultFile) -> JobOutcome:
    return JobOutcome("job", {}, files)


async def test_the_first_image_is_shown_made_once_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    path.write_bytes(encoded(Image.new("RGB", (512, 512), "blue")))
    clip = ResultFile.of_bytes("clip.mp4", b"not shown")
    image = ResultFile("out.png", path.stat().st_size, "9", path=path)
    thumbnails = Thumbnails()
    made = await thumbnails.of("alice", "job", outcome(clip, image))
    path.unlink()  # kept: asking again does not read the file
    assert await thumbnails.of("alice", "job", outcome(clip, image)) == made
    assert Image.open(io.BytesIO(made)).size == (256, 256)


async def test_thumbnails_stay_within_their_memory() -> None:
    thumbnails = Thumbnails(max_bytes=100_000)
    noise = Image.effect_noise((256, 256), 100).convert("RGB")  # JPEG cannot shrink noise
    data = encoded(noise)
    for n in range(20):
        await thumbnails.of(None, f"job-{n}", outcome(ResultFile.of_bytes("n.png", data)))
    assert 0 < thumbnails._made.size <= 100_000
    assert 1 < len(thumbnails._made) < 20  # the oldest were dropped
    assert "job-19" in {request_id for _, request_id, _, _ in thumbnails._made}
    assert CACHE_BYTES <= 8 * 2**20  # the gateway's own bound is small too


@pytest.mark.parametrize(
    "files",
    [
        (),
        (ResultFile.of_bytes("a.wav", b"RIFF"),),
        (ResultFile("up.png", 10, location="https://bucket.example/up.png"),),  # uploaded
        (ResultFile.of_bytes("broken.png", b"\x89PNG not really"),),
    ],
    ids=["no files", "no image", "uploaded", "unreadable"],
)
async def test_a_job_without_an_image_here_is_a_404(files: tuple[ResultFile, ...]) -> None:
    with pytest.raises(NotFound) as missing:
        await Thumbnails().of(None, "job", outcome(*files))
    assert missing.value.location == "id"


async def test_an_image_file_too_large_is_never_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"  # absent: reading it would be an OSError, not this 404
    with pytest.raises(NotFound, match="too large for a thumbnail"):
        huge = ResultFile("huge.png", MAX_FILE_BYTES + 1, "9", path=path)
        await Thumbnails().of(None, "job", outcome(huge))


async def test_a_job_without_an_outcome_is_a_404() -> None:
    with pytest.raises(NotFound):
        await Thumbnails().of(None, "running", None)


def test_an_error_shown_is_cut_to_its_bound_and_odd_details_are_ignored() -> None:
    long = "<script>alert(1)</script>" * 100
    shown = error_view({"error": long, "code": "x", "details": "not a mapping"})
    assert len(shown["message"]) == TEXT_MAX and shown["message"].startswith("<script>")
    assert "node_id" not in shown
