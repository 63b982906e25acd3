"""Azure Blob Storage: the operator's storage account, as comfyui-api names its settings."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from app.core.settings.sources import empty_is_unset

CONTAINER_PATTERN = r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$"  # Azure's rule for containers


class AzureSettings(BaseModel):
    """Azure Blob Storage: blob URLs as inputs, read with the operator's account."""

    azure_storage_connection_string: SecretStr | None = Field(
        None,
        description="The storage account's connection string (`AccountName=…;AccountKey=…;` or "
        "`…;SharedAccessSignature=…`, optionally `BlobEndpoint=`, or "
        "`UseDevelopmentStorage=true` for Azurite). With any `AZURE_STORAGE_*` set, an input URL "
        "that is a blob URL (`https://…blob.core.windows.net/…`, or `http://` naming "
        "`devstoreaccount` or `azurite`) is read from this account, and `azure_blob_upload` "
        "stores outputs in it; without, a blob URL is a plain HTTP(S) download. Never logged",
    )
    azure_storage_account: str | None = Field(
        None,
        description="The storage account's name, with `AZURE_STORAGE_KEY` or "
        "`AZURE_STORAGE_SAS_TOKEN` (when there is no connection string). Alone (comfyui-api: "
        "`DefaultAzureCredential`) it is not supported: start-up says so",
    )
    azure_storage_key: SecretStr | None = Field(
        None, description="The account's shared key (base64), with `AZURE_STORAGE_ACCOUNT`"
    )
    azure_storage_sas_token: SecretStr | None = Field(
        None,
        description="A SAS token for the account (with or without the leading `?`), with "
        "`AZURE_STORAGE_ACCOUNT`",
    )
    azure_storage_containers: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="A comma list of the containers the operator's account serves to requests "
        "(like `S3_BUCKETS`): a blob URL or `azure_blob_upload.container` naming another is a "
        "located 400. Default: any",
    )

    @field_validator(
        "azure_storage_connection_string",
        "azure_storage_account",
        "azure_storage_key",
        "azure_storage_sas_token",
        mode="before",
    )
    @classmethod
    def _azure_empty_is_unset(cls, value: Any) -> Any:
        return empty_is_unset(value)

    @field_validator("azure_storage_containers", mode="before")
    @classmethod
    def _split_containers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("azure_storage_containers")
    @classmethod
    def _containers_valid(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for container in value:
            if not re.fullmatch(CONTAINER_PATTERN, container):
                raise ValueError(f"{container[:70]!r} is not an Azure container name")
        return value

    @model_validator(mode="after")
    def _azure_credentials_complete(self) -> AzureSettings:
        if self.azure_storage_connection_string is not None:
            return self
        if self.azure_storage_account is None:
            if self.azure_storage_key is not None or self.azure_storage_sas_token is not None:
                raise ValueError(
                    "AZURE_STORAGE_KEY and AZURE_STORAGE_SAS_TOKEN need AZURE_STORAGE_ACCOUNT"
                )
            return self
        if self.azure_storage_key is None and self.azure_storage_sas_token is None:
            raise ValueError(
                "AZURE_STORAGE_ACCOUNT alone means Azure's DefaultAzureCredential (managed "
                "identity, az login) in comfyui-api, which this gateway does not support: set "
                "AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN, or AZURE_STORAGE_CONNECTION_STRING"
            )
        return self

    @property
    def azure_configured(self) -> bool:
        return (
            self.azure_storage_connection_string is not None
            or self.azure_storage_account is not None
        )
