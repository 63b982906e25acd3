"""`convert_output`: the formats and options a request may ask for, in our names and in sharp's.

SaladTechnologies' comfyui-api passes its options to sharp (`quality`, `chromaSubsampling`,
`mozjpeg`, `effort`, `nearLossless`, …); ours go to Pillow. Both sets are accepted: what Pillow
can do is mapped (`optimizeCoding` → `optimize`, `chromaSubsampling` → `subsampling`, `effort`
→ `method`, `alphaQuality` → `alpha_quality`), and what it cannot (`mozjpeg`,
`trellisQuantisation`, `nearLossless`, `preset`, …, and the other format's names, which their
schema also accepts) is named by `ignored()`, for a response header: never an error. A wrong
type or an out-of-range value is still a located 400.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from PIL import ImageColor
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PrivateAttr, field_validator
from pydantic import model_validator as _model_validator

JPEG_ONLY = frozenset({
    "progressive", "chromaSubsampling", "optimizeCoding", "optimiseCoding", "mozjpeg",
    "trellisQuantisation", "overshootDeringing", "optimizeScans", "optimiseScans",
    "quantisationTable", "quantizationTable",
})  # fmt: skip
WEBP_ONLY = frozenset(
    {"alphaQuality", "lossless", "nearLossless", "smartSubsample", "preset", "effort", "exact"}
)


def _alias(*names: str) -> Any:
    return AliasChoices(*names)


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    _foreign: list[str] = PrivateAttr(default_factory=list)
    other_format: ClassVar[frozenset[str]] = frozenset()  # sharp's names of the other format
    format_name: ClassVar[str] = ""

    @_model_validator(mode="wrap")
    @classmethod
    def _set_aside_other_format(cls, value: Any, handler: Any) -> Any:
        foreign: list[str] = []
        if isinstance(value, dict):
            foreign = [k for k in value if k in cls.other_format]
            value = {k: v for k, v in value.items() if k not in foreign}
        model = handler(value)
        model._foreign = foreign
        return model

    def _unmapped(self) -> list[str]:
        return []

    def ignored(self) -> list[str]:
        """The options given that this conversion cannot honour, each with why."""
        return [f"{name} (not a {self.format_name} option)" for name in self._foreign] + [
            f"{name} (no Pillow equivalent)" for name in self._unmapped()
        ]


class PngOptions(_Options):
    format_name: ClassVar[str] = "png"
    other_format: ClassVar[frozenset[str]] = JPEG_ONLY | WEBP_ONLY | {"quality"}
    compress_level: int = Field(6, ge=0, le=9, description="zlib level, 0 (none) to 9 (smallest)")
    optimize: bool = Field(False, description="Spend more time for a smaller file")

    def pillow(self) -> dict[str, Any]:
        return {"compress_level": self.compress_level, "optimize": self.optimize}


class JpegOptions(_Options):
    format_name: ClassVar[str] = "jpeg"
    other_format: ClassVar[frozenset[str]] = WEBP_ONLY
    quality: int = Field(90, ge=1, le=100, description="1 (smallest) to 100 (best)")
    progressive: bool = Field(False, description="Progressive JPEG")
    optimize: bool = Field(False, description="Optimise the Huffman tables")
    background: str = Field(
        "#ffffff", description="Colour that transparent pixels become (JPEG has no alpha)"
    )
    chromaSubsampling: Literal["4:2:0", "4:4:4"] | None = Field(
        None, description='sharp\'s: `"4:4:4"` keeps full colour detail (default `"4:2:0"`)'
    )
    optimizeCoding: bool | None = Field(
        None,
        validation_alias=_alias("optimizeCoding", "optimiseCoding"),
        description="sharp's name for `optimize` (also `optimiseCoding`)",
    )
    mozjpeg: bool | None = Field(None, description="sharp's; no Pillow equivalent: ignored")
    trellisQuantisation: bool | None = Field(None, description="sharp's; ignored")
    overshootDeringing: bool | None = Field(None, description="sharp's; ignored")
    optimizeScans: bool | None = Field(
        None,
        validation_alias=_alias("optimizeScans", "optimiseScans"),
        description="sharp's; ignored",
    )
    quantisationTable: int | None = Field(
        None,
        ge=0,
        le=8,
        validation_alias=_alias("quantisationTable", "quantizationTable"),
        description="sharp's (0-8); ignored",
    )

    @field_validator("background")
    @classmethod
    def _colour(cls, value: str) -> str:
        try:
            ImageColor.getrgb(value)
        except ValueError:
            raise ValueError("not a colour, e.g. #ffffff or white") from None
        return value

    def pillow(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "quality": self.quality,
            "progressive": self.progressive,
            "optimize": self.optimize if self.optimizeCoding is None else self.optimizeCoding,
        }
        if self.chromaSubsampling is not None:
            kwargs["subsampling"] = 0 if self.chromaSubsampling == "4:4:4" else 2
        return kwargs

    def _unmapped(self) -> list[str]:
        flags = ("mozjpeg", "trellisQuantisation", "overshootDeringing", "optimizeScans")
        names = [name for name in flags if getattr(self, name)]
        return names + (["quantisationTable"] if self.quantisationTable else [])


class WebpOptions(_Options):
    format_name: ClassVar[str] = "webp"
    other_format: ClassVar[frozenset[str]] = JPEG_ONLY
    quality: int = Field(80, ge=1, le=100, description="1 (smallest) to 100 (best)")
    lossless: bool = Field(False, description="Lossless WebP")
    method: int = Field(4, ge=0, le=6, description="0 (fast) to 6 (slower, smaller)")
    effort: int | None = Field(None, ge=0, le=6, description="sharp's name for `method`")
    alphaQuality: int | None = Field(
        None, ge=0, le=100, description="sharp's: quality of the alpha channel, 0-100"
    )
    exact: bool | None = Field(None, description="Keep the RGB values under transparent pixels")
    nearLossless: bool | None = Field(None, description="sharp's; ignored")
    smartSubsample: bool | None = Field(None, description="sharp's; ignored")
    preset: Literal["default", "photo", "picture", "drawing", "icon", "text"] | None = Field(
        None, description="sharp's; ignored"
    )

    def pillow(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "quality": self.quality,
            "lossless": self.lossless,
            "method": self.method if self.effort is None else self.effort,
        }
        if self.alphaQuality is not None:
            kwargs["alpha_quality"] = self.alphaQuality
        if self.exact is not None:
            kwargs["exact"] = self.exact
        return kwargs

    def _unmapped(self) -> list[str]:
        names = [name for name in ("nearLossless", "smartSubsample") if getattr(self, name)]
        return names + (["preset"] if self.preset is not None else [])


class PngConvert(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["png"] = Field(description="Re-encode images as PNG")
    options: PngOptions = Field(default_factory=PngOptions, description="PNG options")


class JpegConvert(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["jpeg", "jpg"] = Field(
        description="Re-encode images as JPEG (`jpg`: the same, named `.jpg`)"
    )
    options: JpegOptions = Field(default_factory=JpegOptions, description="JPEG options")


class WebpConvert(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["webp"] = Field(description="Re-encode images as WebP")
    options: WebpOptions = Field(default_factory=WebpOptions, description="WebP options")


ConvertOutput = Annotated[PngConvert | JpegConvert | WebpConvert, Field(discriminator="format")]

ConvertSpec = PngConvert | JpegConvert | WebpConvert


def ignored_options(spec: ConvertSpec | None) -> list[str]:
    """`convert_output.options.<name> (why)` for each option this conversion does not honour."""
    if spec is None:
        return []
    return [f"convert_output.options.{name}" for name in spec.options.ignored()]
