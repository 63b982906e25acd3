"""Files a request names: input downloads, output uploads, and the addresses they may reach."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, Field, IPvAnyNetwork, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from app.core.settings.sources import empty_is_unset
from app.core.url_prefixes import prefix_problem

BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$"  # S3's rule for bucket names


class MediaSettings(BaseModel):
    """Input downloads, output uploads, and which addresses a request's URLs may reach."""

    input_max_mb: float = Field(
        100.0,
        gt=0,
        description="Largest input file: downloaded from a URL, decoded from base64, or a "
        "multipart part (`/api/v1/prompts`, `/api/v2/assets`, the passthrough's uploads); a "
        "located 400 past it",
    )
    max_input_pixels: int = Field(
        4096 * 4096,
        ge=1,
        description="Most pixels (width x height, summed over every frame: ComfyUI decodes and "
        "stacks them all) an input image may have, read from the file's structure before "
        "anything decodes it (PNG, APNG, JPEG, MPO, GIF, WebP, BMP, TIFF; images in other "
        "formats are refused); a located 400 past it. The default, 16.8 MP, fits a 4K frame "
        "(8.3 MP) twice",
    )
    max_input_frames: int = Field(
        1000,
        ge=1,
        description="Most frames an input image may have (an animated GIF, APNG or WebP, a "
        "TIFF's pages, an MPO's images, images one file concatenates); a located 400 past it",
    )
    input_download_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Time one input download may take",
    )
    allow_private_urls: bool = Field(
        False,
        description="Let the URLs a request names (input URLs, webhook URLs and upload URLs) reach "
        "private, loopback and link-local addresses",
    )
    allowed_private_networks: Annotated[tuple[IPvAnyNetwork, ...], NoDecode] = Field(
        (),
        description="A comma list of CIDRs that input URLs, webhook URLs and upload URLs may reach "
        "anyway (an internal asset server, webhook receiver or store)",
    )
    http_upload_auth_header: SecretStr | None = Field(
        None,
        description="Header sent with `http_upload` PUTs to URLs under `HTTP_UPLOAD_AUTH_PREFIXES` "
        "(and to no other), e.g. `Authorization: Bearer …`; never logged",
    )
    http_upload_auth_prefixes: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="A comma list of the URL prefixes `HTTP_UPLOAD_AUTH_HEADER` is for, e.g. "
        "`https://store.example.com/outputs/`: a PUT gets the header only when its URL is under "
        "one (same scheme, host and port, the path up to a `/`). Required with the header: "
        "without it the gateway does not start",
    )
    s3_buckets: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="A comma list of the buckets the operator's AWS credentials serve: `s3` "
        "output uploads and `s3://` model URLs in requests may name only these (a located 400 "
        "for another). Default: any bucket the credentials reach",
    )
    upload_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Time one output upload may take, all of it (connecting, sending, the "
        "store's answer), plus its size at UPLOAD_MIN_MB_PER_S: a store that reads or answers "
        "a byte at a time is cut off there",
    )
    upload_min_mb_per_s: float = Field(
        1.0,
        gt=0,
        description="The slowest an output upload may go: a file of N MB may take "
        "UPLOAD_TIMEOUT_S plus N seconds divided by this (a 300 MB video at 1: 60 + 300 s), "
        "so a large output has time to go, and a store slower than this is still cut off",
    )

    @property
    def input_max_bytes(self) -> int:
        return int(self.input_max_mb * 2**20)

    @field_validator("allowed_private_networks", mode="before")
    @classmethod
    def _split_networks(cls, value: Any) -> Any:
        return split_commas(value)

    @field_validator("http_upload_auth_header", mode="before")
    @classmethod
    def _upload_header_empty_is_unset(cls, value: Any) -> Any:
        return empty_is_unset(value)

    @field_validator("http_upload_auth_prefixes", mode="before")
    @classmethod
    def _split_upload_prefixes(cls, value: Any) -> Any:
        return split_commas(value)

    @field_validator("http_upload_auth_prefixes")
    @classmethod
    def _upload_prefixes_valid(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        problems = [problem for prefix in value if (problem := prefix_problem(prefix))]
        if problems:
            raise ValueError(problems[0])
        return value

    @field_validator("s3_buckets", mode="before")
    @classmethod
    def _split_buckets(cls, value: Any) -> Any:
        return split_commas(value)

    @field_validator("s3_buckets")
    @classmethod
    def _buckets_valid(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for bucket in value:
            if not re.fullmatch(BUCKET_PATTERN, bucket):
                raise ValueError(f"{bucket[:70]!r} is not an S3 bucket name")
        return value

    @model_validator(mode="after")
    def _upload_header_has_prefixes(self) -> MediaSettings:
        # The header is the operator's secret: without prefixes it would go to whatever
        # url_prefix a client names.
        if self.http_upload_auth_header is not None and not self.http_upload_auth_prefixes:
            raise ValueError(
                "HTTP_UPLOAD_AUTH_HEADER is sent only to URLs under HTTP_UPLOAD_AUTH_PREFIXES, and "
                "none is set: list your stores' URL prefixes there (a comma list, e.g. "
                "https://store.example.com/outputs/), or unset the header"
            )
        return self


def split_commas(value: Any) -> Any:
    """A comma list from the environment as a tuple; blanks dropped."""
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return value
