"""What every job request may carry besides its graph: id, priority, webhooks, output conversion,
uploads.

These are request models (pydantic), shared by every route that runs a job; the services that
act on them (app.media.convert, app.jobs.uploads, app.jobs.webhooks) import them from here.
"""

from __future__ import annotations

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    field_validator,
    model_validator,
)

from app.core.convert_options import ConvertOutput
from app.core.convert_options import ConvertSpec as ConvertSpec  # re-exported: app.jobs.outputs
from app.core.download_auth import CredentialRule
from app.core.priority import PRIORITY_MAX, PRIORITY_MIN
from app.core.url_prefixes import prefix_problem

REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
PARTNER_KEY_MAX = 512


def partner_key_problem(value: str) -> str | None:
    """Why a Comfy.org API key cannot be one (it travels as an HTTP header); None if it can.
    The message never repeats the value."""
    if not 1 <= len(value) <= PARTNER_KEY_MAX:
        return f"must be 1-{PARTNER_KEY_MAX} characters"
    if not all("!" <= c <= "~" for c in value):
        return "must be printable ASCII without spaces"
    return None


class S3Upload(BaseModel):
    """Store each output at `s3://bucket/prefix<filename>`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    bucket: str = Field(
        min_length=3,
        max_length=63,
        pattern=r"^[a-z0-9][a-z0-9.\-]*[a-z0-9]$",
        description="Bucket name",
    )
    prefix: str = Field("", max_length=900, description="Key prefix, e.g. `renders/2026/`")
    async_: bool = Field(
        False, alias="async", description="Answer 202 at once and upload in the background"
    )


class AzureBlobUpload(BaseModel):
    """Store each output as the block blob `<container>/<blob_prefix><filename>` in the
    operator's Azure Storage account (AZURE_STORAGE_*), as comfyui-api does."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    container: str = Field(
        min_length=3,
        max_length=63,
        pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$",
        description="Container name (one of AZURE_STORAGE_CONTAINERS when that is set)",
    )
    blob_prefix: str = Field(
        "",
        max_length=900,
        description="Blob name prefix, e.g. `renders/2026/` (one leading `/` is dropped)",
    )
    async_: bool = Field(
        False, alias="async", description="Answer 202 at once and upload in the background"
    )


class HttpUpload(BaseModel):
    """PUT each output to `url_prefix` + `/` + filename."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    url_prefix: str = Field(
        pattern=r"^https?://",
        max_length=2000,
        description="Where to PUT, e.g. `https://store.example.com/out/`",
    )
    async_: bool = Field(
        False, alias="async", description="Answer 202 at once and upload in the background"
    )


Upload = S3Upload | AzureBlobUpload | HttpUpload
UPLOAD_KEYS = ("s3", "azure_blob_upload", "http_upload")


class JobOptions(BaseModel):
    """What every job request may carry besides its graph (or its workflow input)."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(
        None,
        pattern=REQUEST_ID_PATTERN,
        description="Request id naming the job in responses, logs and /interrupt; "
        "default a new UUID. Letters, digits and `._:-`, at most 128 characters",
    )
    webhook: HttpUrl | None = Field(
        None,
        description="Legacy webhook: answer 202 at once, then POST one `output.complete` per "
        "output file (or one `prompt.failed`) here",
    )
    webhook_v2: HttpUrl | None = Field(
        None,
        description="Answer 202 at once, then POST one signed `prompt.complete` (the full 200 "
        "body) or `prompt.failed` here when the job ends (Standard Webhooks headers)",
    )
    progress_webhook: HttpUrl | None = Field(
        None,
        description="POST signed `job.started` (once) and `job.progress` events (node, "
        "node_name, step, max, percent; throttled, newest wins) of this job here while it "
        "runs; best effort: never delays the job or its outcome, and not exactly-once",
    )
    api_key_comfy_org: SecretStr | None = Field(
        None,
        description="A Comfy.org API key for ComfyUI's partner (API) nodes, passed to ComfyUI "
        "as `extra_data.api_key_comfy_org` of this job; never logged, stored or echoed",
    )
    priority: int = Field(
        0,
        strict=True,
        ge=PRIORITY_MIN,
        le=PRIORITY_MAX,
        description=f"Higher runs first ({PRIORITY_MIN} to {PRIORITY_MAX}); a waiting job gains "
        "1 per QUEUE_AGE_STEP_S, so none starves. A key's KEY_LIMITS max_priority caps it",
    )
    convert_output: ConvertOutput | None = Field(
        None,
        description='Re-encode image outputs: `{"format": "png"|"jpeg"|"webp", '
        '"options": {…}}`; video, audio and other files are returned as they are',
    )

    s3: S3Upload | None = Field(
        None, description="Store the outputs in S3 instead: `images` then hold `s3://` URIs"
    )
    azure_blob_upload: AzureBlobUpload | None = Field(
        None,
        description="Store the outputs in Azure Blob Storage instead: `images` then hold the "
        "blob URLs",
    )
    http_upload: HttpUpload | None = Field(
        None,
        description="PUT the outputs to `url_prefix` (trailing `/` removed) + `/` + file name; "
        "`images` hold the URLs",
    )

    model_credentials: dict[str, SecretStr] | None = Field(
        None,
        description="Credentials for the model URLs this request names, by URL prefix: "
        '`{"https://models.example.com/private/": "TOKEN"}`; a value is a bearer token or a '
        "whole header (`Name: value`). Sent only to URLs under its prefix (same scheme, host "
        "and port), never to a redirect elsewhere; never logged or echoed",
    )

    credentials: list[CredentialRule] | None = Field(
        None,
        max_length=64,
        description="comfyui-api's per-request credentials for the model URLs this request "
        "names: `[{url_pattern, auth}]`, the first glob that matches a URL wins (`**` anything, "
        "`*` anything but `/`, `?` one character); `auth` of type `bearer`, `basic`, `header`, "
        "`query` or `s3`. Sent only to that URL's own host (never to a redirect elsewhere); "
        "never logged, echoed or shown to another key",
    )

    @field_validator("model_credentials")
    @classmethod
    def _prefixes(cls, value: dict[str, SecretStr] | None) -> dict[str, SecretStr] | None:
        problems = [problem for prefix in value or {} if (problem := prefix_problem(prefix))]
        if problems:
            raise ValueError(problems[0])
        return value

    @field_validator("api_key_comfy_org")
    @classmethod
    def _partner_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and (problem := partner_key_problem(value.get_secret_value())):
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _one_store(self) -> JobOptions:
        named = [name for name in UPLOAD_KEYS if getattr(self, name) is not None]
        if len(named) > 1:
            raise ValueError(f"give one of {', '.join(UPLOAD_KEYS)}, not {' and '.join(named)}")
        return self

    @property
    def upload(self) -> Upload | None:
        return self.s3 or self.azure_blob_upload or self.http_upload

    def destinations(self) -> list[tuple[str, str]]:
        """(location, URL) of every URL this request has the gateway send to."""
        urls: list[tuple[str, HttpUrl | str | None]] = [
            ("webhook", self.webhook),
            ("webhook_v2", self.webhook_v2),
            ("progress_webhook", self.progress_webhook),
        ]
        if self.http_upload is not None:
            urls.append(("http_upload.url_prefix", self.http_upload.url_prefix))
        return [(location, str(url)) for location, url in urls if url is not None]

    def comfy_extra_data(self) -> dict[str, str]:
        """What ComfyUI's POST /prompt gets as `extra_data` for this job (revealed here only)."""
        key = self.api_key_comfy_org
        return {"api_key_comfy_org": key.get_secret_value()} if key is not None else {}

    @property
    def answered_at_once(self) -> bool:
        """True when the outcome travels by webhook or async upload: the request gets 202."""
        upload = self.upload
        return bool(self.webhook or self.webhook_v2 or (upload is not None and upload.async_))
