"""Azure Blob Storage with the operator's account: which URLs are blob URLs, and signed reads.

comfyui-api's rules: a blob URL is `https://…` containing `.blob.core.windows.net/`, or
`http://…` containing `devstoreaccount` or `azurite` (the emulator), and only when some
`AZURE_STORAGE_*` is set (otherwise it is a plain HTTP URL). The URL names a container and a
blob; they are read from the operator's account (its endpoint, its key or SAS), never from a host
the URL names, so the credentials go only where the operator pointed them. Shared Key requests
are signed here (a GET needs only the Blob service's signature, not Azure's SDK).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from app.core.settings import Settings

API_VERSION = "2021-08-06"
# Azurite's well-known development account (UseDevelopmentStorage=true), as Azure documents it.
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class BlobUrlError(ValueError):
    """A blob URL that names no container and blob, or another account than the operator's."""


@dataclass(frozen=True)
class BlobAccount:
    """The operator's storage account: its name, Blob endpoint, and a key or a SAS token."""

    name: str
    endpoint: str  # e.g. https://acct.blob.core.windows.net or http://127.0.0.1:10000/acct
    key: bytes | None = None
    sas: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> BlobAccount | None:
        if settings.azure_storage_connection_string is not None:
            return cls.from_connection_string(
                settings.azure_storage_connection_string.get_secret_value()
            )
        if settings.azure_storage_account is None:
            return None
        name = settings.azure_storage_account
        key = settings.azure_storage_key
        sas = settings.azure_storage_sas_token
        return cls(
            name,
            f"https://{name}.blob.core.windows.net",
            base64.b64decode(key.get_secret_value()) if key else None,
            sas.get_secret_value().lstrip("?") if sas else None,
        )

    @classmethod
    def from_connection_string(cls, text: str) -> BlobAccount:
        parts = dict(
            item.split("=", 1) for item in text.strip().strip(";").split(";") if "=" in item
        )
        if parts.get("UseDevelopmentStorage", "").lower() == "true":
            return cls(
                DEV_ACCOUNT, f"http://127.0.0.1:10000/{DEV_ACCOUNT}", base64.b64decode(DEV_KEY)
            )
        name = parts.get("AccountName", "")
        protocol = parts.get("DefaultEndpointsProtocol", "https")
        suffix = parts.get("EndpointSuffix", "core.windows.net")
        endpoint = parts.get("BlobEndpoint") or f"{protocol}://{name}.blob.{suffix}"
        key = parts.get("AccountKey")
        sas = parts.get("SharedAccessSignature")
        if not name and endpoint:
            name = account_of(endpoint)
        if not name or not (key or sas):
            raise ValueError(
                "AZURE_STORAGE_CONNECTION_STRING needs AccountName and AccountKey, or "
                "BlobEndpoint and SharedAccessSignature"
            )
        return cls(
            name,
            endpoint.rstrip("/"),
            base64.b64decode(key) if key else None,
            sas and sas.lstrip("?"),
        )

    def blob_url(self, container: str, blob: str, *, signed: bool = True) -> str:
        """The blob's URL; with the SAS token when that is the account's credential, unless
        `signed` is False (a URL to show: the token is the operator's secret)."""
        url = f"{self.endpoint}/{quote(container)}/{quote(blob)}"
        return f"{url}?{self.sas}" if signed and self.sas and self.key is None else url

    def signed_headers(
        self, method: str, url: str, *, length: int = 0, content_type: str = "", **ms: str
    ) -> dict[str, str]:
        """Headers for a request to url with a body of `length` bytes (and more `x-ms-*`
        headers, `_` for `-`): a Shared Key signature, or none with SAS."""
        headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": API_VERSION}
        headers |= {"x-ms-" + name.replace("_", "-"): value for name, value in ms.items()}
        if self.key is None:
            return _with_body(headers, length, content_type)
        canonical_headers = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()))
        # The verb, then the eleven standard headers in Azure's order (Content-Encoding,
        # -Language, -Length (empty for none), -MD5, -Type, Date, four If-*, Range), then the
        # x-ms-* headers and the resource.
        standard = ["", "", str(length or ""), "", content_type] + [""] * 6
        to_sign = f"{method}\n" + "".join(f"{v}\n" for v in standard) + canonical_headers
        to_sign += canonical_resource(self.name, url)
        digest = hmac.new(self.key, to_sign.encode(), hashlib.sha256).digest()
        headers["Authorization"] = f"SharedKey {self.name}:{base64.b64encode(digest).decode()}"
        return _with_body(headers, length, content_type)


def canonical_resource(account: str, url: str) -> str:
    """What a Shared Key signature says of the resource: the account, the URL's path, then each
    query parameter (`comp`, `blockid`) on a line of its own, sorted, its value decoded."""
    parts = urlsplit(url)
    params: dict[str, list[str]] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        params.setdefault(name.lower(), []).append(value)
    lines = "".join(f"\n{k}:{','.join(sorted(v))}" for k, v in sorted(params.items()))
    return f"/{account}{parts.path}{lines}"


def _with_body(headers: dict[str, str], length: int, content_type: str) -> dict[str, str]:
    if content_type:
        headers["Content-Type"] = content_type
    if length:
        headers["Content-Length"] = str(length)
    return headers


def is_blob_url(url: str) -> bool:
    """comfyui-api's test for an Azure Blob URL (the real service, or the emulator)."""
    lowered = url.lower()
    if lowered.startswith("https://"):
        return ".blob.core.windows.net/" in lowered
    return lowered.startswith("http://") and ("devstoreaccount" in lowered or "azurite" in lowered)


def account_of(url: str) -> str:
    """The account a Blob URL or endpoint names: the host's first label, or (path style: the
    emulator, a custom endpoint) the first path segment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host.endswith(".blob.core.windows.net"):
        return host.split(".", 1)[0]
    return unquote(parts.path.lstrip("/").split("/", 1)[0])


def container_and_blob(url: str, account: BlobAccount) -> tuple[str, str]:
    """The container and blob a blob URL names, in the operator's account; else BlobUrlError."""
    parts = urlsplit(url)
    segments = parts.path.lstrip("/").split("/")
    host = parts.hostname or ""
    if not host.endswith(".blob.core.windows.net"):
        segments = segments[1:]  # path style: the first segment is the account
    named = account_of(url)
    if named != account.name:
        raise BlobUrlError(
            f"names the storage account {named!r}; this gateway's Azure credentials serve "
            f"{account.name!r} (AZURE_STORAGE_*)"
        )
    if len(segments) < 2 or not segments[0] or not all(segments[1:]):
        raise BlobUrlError("a blob URL names a container and a blob: …/<container>/<blob>")
    return unquote(segments[0]), unquote("/".join(segments[1:]))
