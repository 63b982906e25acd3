"""Files a request names: input downloads, output uploads, and the addresses they may reach."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, IPvAnyNetwork, field_validator
from pydantic_settings import NoDecode


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
        description="Most pixels (width x height) an input image may have, read from its header "
        "before anything decodes it (PNG, JPEG, WebP, GIF, BMP, TIFF); a located 400 past it. "
        "The default, 16.8 MP, fits a 4K frame (8.3 MP) twice",
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
    http_upload_auth_header: str | None = Field(
        None,
        description="Header sent with `http_upload` PUTs, e.g. `Authorization: Bearer …`",
    )
    upload_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Time one output upload may take, all of it (connecting, sending, the "
        "store's answer): a store that reads or answers a byte at a time is cut off there",
    )

    @property
    def input_max_bytes(self) -> int:
        return int(self.input_max_mb * 2**20)

    @field_validator("allowed_private_networks", mode="before")
    @classmethod
    def _split_networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value
