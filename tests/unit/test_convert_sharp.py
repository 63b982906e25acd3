"""convert_output with comfyui-api's names: `jpg`, and sharp's options mapped onto Pillow or
named as ignored; checked by decoding what comes out."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from pydantic import TypeAdapter, ValidationError

from app.core.convert_options import ignored_options
from app.core.options import ConvertOutput, ConvertSpec
from app.media.convert import convert, converted_name
from tests.unit.test_convert import noisy_png

SPEC: TypeAdapter[ConvertSpec] = TypeAdapter(ConvertOutput)


def jpeg_of(options: dict[str, object], fmt: str = "jpeg") -> Image.Image:
    out = convert(noisy_png(), SPEC.validate_python({"format": fmt, "options": options}))
    assert out is not None
    return Image.open(io.BytesIO(out))


def test_jpg_is_jpeg_named_jpg() -> None:
    spec = SPEC.validate_python({"format": "jpg"})
    assert converted_name("ComfyUI_00001_.png", spec) == "ComfyUI_00001_.jpg"
    out = convert(noisy_png(), spec)
    assert out is not None and Image.open(io.BytesIO(out)).format == "JPEG"


def test_chroma_subsampling_reaches_the_file() -> None:
    from PIL import JpegImagePlugin

    full = jpeg_of({"chromaSubsampling": "4:4:4"})
    half = jpeg_of({"chromaSubsampling": "4:2:0"})
    assert JpegImagePlugin.get_sampling(full) == 0  # type: ignore[attr-defined]
    assert JpegImagePlugin.get_sampling(half) == 2  # type: ignore[attr-defined]


def test_quality_and_optimise_coding_are_pillows() -> None:
    spec = SPEC.validate_python(
        {"format": "jpeg", "options": {"quality": 40, "optimiseCoding": True, "progressive": True}}
    )
    assert spec.options.pillow() == {"quality": 40, "progressive": True, "optimize": True}
    assert "progressive" in jpeg_of({"progressive": True}).info
    assert ignored_options(spec) == []


def test_webp_effort_and_alpha_quality_map_to_method_and_alpha_quality() -> None:
    spec = SPEC.validate_python(
        {"format": "webp", "options": {"effort": 6, "alphaQuality": 50, "quality": 70}}
    )
    assert spec.options.pillow() == {
        "quality": 70, "lossless": False, "method": 6, "alpha_quality": 50
    }  # fmt: skip
    out = convert(noisy_png(), spec)
    assert out is not None and Image.open(io.BytesIO(out)).format == "WEBP"


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        (
            {"format": "jpeg", "options": {"mozjpeg": True, "trellisQuantisation": True}},
            ["mozjpeg (no Pillow equivalent)", "trellisQuantisation (no Pillow equivalent)"],
        ),
        ({"format": "jpg", "options": {"quantizationTable": 3}},
         ["quantisationTable (no Pillow equivalent)"]),
        ({"format": "jpeg", "options": {"mozjpeg": False}}, []),  # asks for nothing
        ({"format": "webp", "options": {"nearLossless": True, "preset": "photo"}},
         ["nearLossless (no Pillow equivalent)", "preset (no Pillow equivalent)"]),
        # their schema parses every options object as JPEG options: the other format's names pass
        ({"format": "webp", "options": {"progressive": True}}, ["progressive (not a webp option)"]),
        ({"format": "jpeg", "options": {"lossless": True}}, ["lossless (not a jpeg option)"]),
        ({"format": "png", "options": {"quality": 50}}, ["quality (not a png option)"]),
    ],
)  # fmt: skip
def test_what_pillow_cannot_do_is_named_not_refused(
    spec: dict[str, object], named: list[str]
) -> None:
    parsed = SPEC.validate_python(spec)
    assert ignored_options(parsed) == [f"convert_output.options.{n}" for n in named]
    assert convert(noisy_png(), parsed) is not None


@pytest.mark.parametrize(
    ("spec", "bad"),
    [
        ({"format": "jpeg", "options": {"quality": "x"}}, "quality"),
        ({"format": "jpg", "options": {"quality": 1000}}, "quality"),
        ({"format": "jpeg", "options": {"chromaSubsampling": "4:1:1"}}, "chromaSubsampling"),
        ({"format": "jpeg", "options": {"mozjpeg": "yes please"}}, "mozjpeg"),
        ({"format": "jpeg", "options": {"quantisationTable": 9}}, "quantisationTable"),
        ({"format": "webp", "options": {"effort": 7}}, "effort"),
        ({"format": "webp", "options": {"alphaQuality": -1}}, "alphaQuality"),
        ({"format": "webp", "options": {"preset": "poster"}}, "preset"),
        ({"format": "webp", "options": {"exactly": True}}, "exactly"),
    ],
)
def test_wrong_types_and_ranges_are_still_located(spec: dict[str, object], bad: str) -> None:
    with pytest.raises(ValidationError) as caught:
        SPEC.validate_python(spec)
    assert bad.lower()[:8] in str(caught.value.errors()[0]["loc"]).lower()
