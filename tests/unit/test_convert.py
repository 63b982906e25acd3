"""convert_output: each format and option, checked by decoding what comes out."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from pydantic import TypeAdapter, ValidationError

from app.core.options import ConvertOutput, ConvertSpec
from app.media.convert import convert, converted_name

SPEC: TypeAdapter[ConvertSpec] = TypeAdapter(ConvertOutput)


def png(
    mode: str = "RGBA", size: tuple[int, int] = (16, 12), colour: object = (255, 0, 0, 0)
) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, colour).save(out, "PNG")  # type: ignore[arg-type]
    return out.getvalue()


def noisy_png() -> bytes:
    image = Image.effect_noise((64, 64), 80).convert("RGB")
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize(
    ("fmt", "pillow", "suffix"),
    [("png", "PNG", ".png"), ("jpeg", "JPEG", ".jpeg"), ("webp", "WEBP", ".webp")],
)
def test_each_format(fmt: str, pillow: str, suffix: str) -> None:
    spec = SPEC.validate_python({"format": fmt})
    out = convert(png("RGB", colour=(0, 0, 255)), spec)
    assert out is not None
    image = decoded(out)
    assert image.format == pillow
    assert image.size == (16, 12)
    assert converted_name("ComfyUI_00001_.png", spec) == f"ComfyUI_00001_{suffix}"


def test_jpeg_flattens_alpha_onto_the_background() -> None:
    transparent = png("RGBA", colour=(255, 0, 0, 0))
    white = decoded(convert(transparent, SPEC.validate_python({"format": "jpeg"})) or b"")
    assert white.mode == "RGB"
    assert all(c > 245 for c in white.getpixel((5, 5)))  # type: ignore[union-attr]
    spec = SPEC.validate_python({"format": "jpeg", "options": {"background": "#000000"}})
    black = decoded(convert(transparent, spec) or b"")
    assert all(c < 10 for c in black.getpixel((5, 5)))  # type: ignore[union-attr]


def test_quality_changes_the_size() -> None:
    source = noisy_png()
    low = convert(source, SPEC.validate_python({"format": "jpeg", "options": {"quality": 5}}))
    high = convert(source, SPEC.validate_python({"format": "jpeg", "options": {"quality": 95}}))
    assert low is not None and high is not None
    assert len(low) < len(high) / 2


def test_progressive_jpeg_and_lossless_webp() -> None:
    progressive = convert(
        png("RGB"), SPEC.validate_python({"format": "jpeg", "options": {"progressive": True}})
    )
    assert decoded(progressive or b"").info.get("progressive") == 1
    source = noisy_png()
    lossless = convert(
        source, SPEC.validate_python({"format": "webp", "options": {"lossless": True}})
    )
    assert decoded(lossless or b"").convert("RGB").tobytes() == decoded(source).tobytes()


def test_png_compress_level() -> None:
    source = noisy_png()
    none = convert(
        source, SPEC.validate_python({"format": "png", "options": {"compress_level": 0}})
    )
    best = convert(
        source, SPEC.validate_python({"format": "png", "options": {"compress_level": 9}})
    )
    assert none is not None and best is not None
    assert len(best) < len(none)


def test_animated_images_keep_their_frames_in_webp() -> None:
    frames = [Image.new("RGB", (8, 8), (i * 60, 0, 0)) for i in range(4)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    webp = decoded(convert(out.getvalue(), SPEC.validate_python({"format": "webp"})) or b"")
    assert webp.format == "WEBP"
    assert getattr(webp, "n_frames", 1) == 4


@pytest.mark.parametrize(
    "data",
    [b"\x00\x00\x00\x18ftypmp42" + bytes(100), b"RIFF\x00\x00\x00\x00WAVEfmt ", b"plain text"],
)
def test_non_images_are_left_alone(data: bytes) -> None:
    assert convert(data, SPEC.validate_python({"format": "webp"})) is None


@pytest.mark.parametrize(
    ("spec", "bad"),
    [
        ({"format": "jpeg", "options": {"quality": 0}}, "quality"),
        ({"format": "jpeg", "options": {"quality": 101}}, "quality"),
        ({"format": "png", "options": {"compress_level": 10}}, "compress_level"),
        ({"format": "png", "options": {"qualty": 50}}, "qualty"),
        ({"format": "webp", "options": {"method": 7}}, "method"),
        ({"format": "jpeg", "options": {"background": "not-a-colour"}}, "background"),
        ({"format": "jpeg", "options": {"losless": True}}, "losless"),
        ({"format": "gif"}, "format"),
    ],
)
def test_bad_options_name_the_option(spec: dict[str, object], bad: str) -> None:
    with pytest.raises(ValidationError) as caught:
        SPEC.validate_python(spec)
    assert bad in str(caught.value.errors()[0]["loc"]) or bad == "format"
