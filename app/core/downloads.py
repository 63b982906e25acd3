"""Models on demand as the API shows them: the download request, a download's state, the cache.

Shared by the model routes, the model store that fills these in, and the CLI's reading of them.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from app.core.download_auth import DownloadAuth

URL_SCHEMES = ("http://", "https://", "s3://")
# A file directly in a model folder: no path, no leading dot (temporary files are hidden), an
# extension (ComfyUI lists only files whose extension the folder takes).
FILENAME = re.compile(r"^[A-Za-z0-9_][\w.+\-() \[\]]{0,199}\.[A-Za-z0-9]{1,16}$")
FOLDER_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$"
DownloadStatus = Literal["queued", "downloading", "done", "failed"]


def is_model_url(value: Any) -> bool:
    """True for a value that names a model by where to download it (http, https, s3)."""
    return isinstance(value, str) and value[:8].lower().startswith(URL_SCHEMES)


def redact(url: str) -> str:
    """A URL as logs and answers may show it: no user info, and no query (tokens travel there)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "<an unparsable URL>"
    return urlunsplit((parts.scheme, netloc, parts.path, "…" if parts.query else "", ""))


def without_userinfo(url: str) -> str:
    """A client's URL as records and errors keep it: no `user:password@`; the rest as given."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<an unparsable URL>"
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def model_url(value: str) -> str:
    if not is_model_url(value) or not urlsplit(value).netloc:
        raise ValueError("must be an http://, https:// or s3:// URL")
    return value


def file_name(value: str | None) -> str | None:
    if value is not None and not FILENAME.match(value):
        raise ValueError(
            "must be a plain file name with an extension (letters, digits, `_.+-()[] `; "
            "no folders, not starting with a dot), e.g. `style.safetensors`"
        )
    return value


class ModelDownloadRequest(BaseModel):
    """Download a model into one of ComfyUI's model folders."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "url": "https://huggingface.co/org/repo/resolve/main/style.safetensors",
                    "folder": "loras",
                    "wait": True,
                }
            ]
        },
    )

    url: str = Field(
        max_length=8192,
        description="Where the model is: an `http(s)://` URL (resumed with `Range` when a "
        "transfer breaks) or `s3://bucket/key` (with the AWS settings of the uploads)",
    )
    folder: str = Field(
        pattern=FOLDER_PATTERN,
        description="ComfyUI's model folder: `checkpoints`, `loras`, `vae`, … (`GET /models`)",
    )
    filename: str | None = Field(
        None,
        description="The file's name in the folder; default the name the server gives "
        "(`Content-Disposition`) or the URL's last path segment",
    )
    sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-fA-F]{64}$",
        description="The file's SHA-256 (hex): a download with other bytes is deleted and fails",
    )
    wait: bool = Field(
        False,
        description="Answer once the file is in place (200), instead of 202 at once with an id "
        "to follow",
    )
    pin: bool = Field(
        False,
        description="Keep the file: never evicted from the cache, and not counted in its cap "
        "(like a file put there by hand)",
    )
    auth: SecretStr | None = Field(
        None,
        description="A bearer token, or a whole header (`Name: value`), for this URL's host "
        "only: never sent to a redirect to another host, never logged or echoed",
    )

    _url = field_validator("url")(model_url)
    _filename = field_validator("filename")(file_name)


class DownloadRequest(BaseModel):
    """comfyui-api's `POST /download`: a model into one of the model folders."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"url": "https://example.com/models/x.safetensors", "model_type": "loras",
                 "wait": True}
            ]
        },
    )  # fmt: skip

    url: str = Field(max_length=8192, description="An `http(s)://` or `s3://` URL")
    model_type: str = Field(
        pattern=FOLDER_PATTERN,
        description="The model folder (`checkpoints`, `loras`, …: `GET /models`)",
    )
    filename: str | None = Field(
        None, description="The file's name; default the URL's last path segment"
    )
    wait: bool = Field(False, description="Answer 200 once the file is in place, not 202 at once")
    auth: DownloadAuth | None = Field(
        None,
        description="Credentials for this URL (`bearer`, `basic`, `header`, `query`, `s3`): sent "
        "to its own host only, never logged or echoed",
    )

    _url = field_validator("url")(model_url)
    _filename = field_validator("filename")(file_name)


class DownloadAnswer(BaseModel):
    """comfyui-api's answer to `POST /download`."""

    url: str = Field(description="The URL, as given (without user info)")
    model_type: str = Field(description="The model folder")
    filename: str = Field(description="The file's name in it")
    status: Literal["started", "completed"] = Field(description="`started` (202), `completed`")
    size: int | None = Field(None, description="With `wait`: the file's size in bytes")
    duration: float | None = Field(None, description="With `wait`: seconds it took")


class ModelDownloadState(BaseModel):
    """One download: where it is, and how it ended."""

    id: str = Field(description="The download's id (`GET /models/downloads/{id}`)")
    url: str = Field(description="The source, without user info or query")
    folder: str = Field(description="The model folder")
    filename: str | None = Field(description="The file's name, once known")
    status: DownloadStatus = Field(description="`queued`, `downloading`, `done` or `failed`")
    bytes: int = Field(description="Bytes in place so far")
    total: int | None = Field(description="The file's size, once the server has said")
    fetched: bool = Field(
        description="Whether the file came over the network (false: it was there already)"
    )
    resumed: int = Field(description="How many times a broken transfer was resumed")
    sha256: str | None = Field(description="The file's SHA-256, once it is in place")
    error: dict[str, Any] | None = Field(description="The error body, once it failed")


class CachedModel(BaseModel):
    """A model file the gateway downloaded."""

    folder: str = Field(description="The model folder")
    filename: str = Field(description="The file's name")
    bytes: int = Field(description="Its size")
    source: str | None = Field(
        description="Where it came from, without user info or query; null for another API "
        "key's download (an admin key sees every source)"
    )
    sha256: str = Field(description="Its SHA-256")
    downloaded_at: str = Field(description="When it landed (ISO 8601, UTC)")
    last_used: str = Field(description="When a job or download last named it (ISO 8601, UTC)")
    in_use: int = Field(description="Queued or running jobs that use it now")
    pinned: bool = Field(description="Never evicted (from the manifest, or downloaded with pin)")


class ModelCacheState(BaseModel):
    """The downloaded models and the room they take."""

    dir: str = Field(description="MODEL_CACHE_DIR: where downloads go, as `<folder>/<file>`")
    max_bytes: int | None = Field(description="MODEL_CACHE_MAX_GB in bytes; null: no cap")
    used_bytes: int = Field(description="What the evictable downloaded models take")
    models: list[CachedModel] = Field(
        description="Every downloaded model, least recently used first"
    )
