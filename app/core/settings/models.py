"""Models on demand: the download cache, credentials for model hosts, the start-up manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from app.core.settings.sources import empty_is_unset
from app.core.url_prefixes import prefix_problem


class ModelSettings(BaseModel):
    """Models on demand: downloads, their cache, credentials for model hosts, the manifest."""

    model_downloads: bool = Field(
        True,
        description="Let requests download models: `POST /models/download`, and URLs in the model "
        "inputs of a graph or the model fields of a workflow. With API keys, only admin keys and "
        "the keys KEY_LIMITS grants `models` may. `MODELS_MANIFEST` works either way",
    )
    model_cache_dir: Path | None = Field(
        None,
        description="Where downloaded models go, as `<folder>/<file>` (`loras/x.safetensors`); "
        "default `MODEL_DIR`, else `COMFY_HOME/models`. The bundled ComfyUI is told to search it; "
        "with `CMD`, make your ComfyUI search it (`--extra-model-paths-config`). One gateway per "
        "folder",
    )
    model_cache_max_gb: float | None = Field(
        None,
        gt=0,
        description="Most the downloaded models may take together; a download that needs more "
        "room, as its bytes arrive, deletes the least recently used ones that no queued or "
        "running job uses. Files put there by hand, from the manifest or downloaded with `pin` "
        "neither count nor are ever deleted. Default: no cap; models are deleted only when the "
        "disk is full",
    )
    model_credentials: dict[str, SecretStr] = Field(
        {},
        description='Credentials for model hosts by URL prefix, as JSON: `{"https://models.'
        'example.com/private/": "TOKEN"}`. A value is a bearer token (`Authorization: Bearer '
        "…`) or a whole header (`Name: value`); it is sent only to URLs under its prefix (same "
        "scheme, host and port), never to a redirect elsewhere, and never logged",
    )
    hf_token: SecretStr | None = Field(
        None,
        description="Hugging Face token, sent as a bearer token to `https://huggingface.co/` only",
    )
    civitai_token: SecretStr | None = Field(
        None,
        description="Civitai token, sent as a bearer token to `https://civitai.com/` only",
    )
    http_auth_header_name: str | None = Field(
        None,
        description="comfyui-api's header for the operator's HTTP sources (with "
        "`HTTP_AUTH_HEADER_VALUE`). Here it goes only to URLs under `HTTP_AUTH_HEADER_PREFIXES` "
        "(model downloads, and `http_upload` PUTs unless `HTTP_UPLOAD_AUTH_HEADER` is set), "
        "never to a URL a request names elsewhere: set without prefixes, the gateway does not "
        "start",
    )
    http_auth_header_value: SecretStr | None = Field(
        None, description="The value of `HTTP_AUTH_HEADER_NAME`; never logged"
    )
    http_auth_header_prefixes: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="A comma list of the URL prefixes `HTTP_AUTH_HEADER_NAME`/`VALUE` is for, "
        "e.g. `https://files.example.com/models/` (same scheme, host and port, the path up to a "
        "`/`). Required with the header",
    )
    models_manifest: Path | None = Field(
        None,
        description="A YAML file of models to fetch before `/ready` turns 200: a list (or "
        "`models:` list) of `{url, folder, filename?, sha256?}`; files already there are not "
        "fetched again. The operator's: its URLs skip the address policy. comfyui-api's "
        "`MANIFEST` names the same (their format: `models.before_start`/`after_start` of "
        "`{url, local_path}`)",
    )
    manifest_json: str | None = Field(
        None,
        description="comfyui-api's manifest as JSON text (their format, or ours); wins over "
        "`MODELS_MANIFEST`/`MANIFEST`",
    )
    model_download_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Longest silence in a model download before it is broken off and resumed",
    )
    model_download_min_kib_per_s: float = Field(
        32.0,
        ge=0,
        description="Slowest a model download may go (KiB a second, on average over every "
        "`MODEL_DOWNLOAD_TIMEOUT_S` from its first byte) before it is broken off and resumed, "
        "so a server that trickles bytes cannot hold a download (and its room) for good; 0: "
        "no minimum",
    )
    model_download_max_s: float = Field(
        3600.0,
        gt=0,
        description="Longest one model download may take in all, resumes included: a server "
        "that sends a byte now and then, never silent for `MODEL_DOWNLOAD_TIMEOUT_S`, is cut off "
        "there and the download fails (502 `download_failed`)",
    )
    model_download_retries: int = Field(
        5,
        ge=0,
        le=100,
        description="How many times a broken model download is resumed (with `Range`) before it "
        "fails",
    )
    model_watch_interval_s: float = Field(
        10.0,
        ge=0,
        description="How often to ask ComfyUI for its model files, so that a file put into a "
        "model folder by hand reaches the workflow enums and `/docs` without a restart; 0: never "
        "(downloads still do at once)",
    )

    @field_validator(
        "model_cache_dir", "model_cache_max_gb", "hf_token", "civitai_token", "models_manifest",
        "http_auth_header_name", "http_auth_header_value", "manifest_json", mode="before",
    )  # fmt: skip
    @classmethod
    def _models_empty_is_unset(cls, value: Any) -> Any:
        return empty_is_unset(value)

    @field_validator("model_credentials")
    @classmethod
    def _credential_prefixes(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        problems = [problem for prefix in value if (problem := prefix_problem(prefix))]
        if problems:
            raise ValueError(problems[0])
        return value

    @field_validator("http_auth_header_prefixes", mode="before")
    @classmethod
    def _header_prefixes(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = tuple(p.strip() for p in value.split(",") if p.strip())
        problems = [problem for prefix in value or () if (problem := prefix_problem(prefix))]
        if problems:
            raise ValueError(problems[0])
        return value

    @model_validator(mode="after")
    def _header_has_prefixes(self) -> ModelSettings:
        name, value = self.http_auth_header_name, self.http_auth_header_value
        if (name is None) != (value is None):
            raise ValueError("set both HTTP_AUTH_HEADER_NAME and HTTP_AUTH_HEADER_VALUE")
        if name is not None and not self.http_auth_header_prefixes:
            raise ValueError(
                "HTTP_AUTH_HEADER_NAME/VALUE is set but not HTTP_AUTH_HEADER_PREFIXES: here the "
                "operator's header goes only to the URL prefixes listed there, never to any URL "
                "a request names; set HTTP_AUTH_HEADER_PREFIXES=https://files.example.com/"
                "models/,… (a comma list)"
            )
        return self

    @field_validator("models_manifest")
    @classmethod
    def _manifest_readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError("no such file")
        return value
