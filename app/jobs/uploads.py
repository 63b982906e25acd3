"""Uploads instead of base64: each output to S3 (or an S3-compatible store), to Azure Blob
Storage, or PUT over HTTP.

S3 credentials, region and endpoint come from the usual AWS variables (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL for S3-compatible stores): a request names
only a bucket, never an endpoint, so there is no address of a client's to check; with S3_BUCKETS
only a bucket listed there (app.core.s3). What S3 says of a failure beyond its error code
(an AccessDenied names the operator's account and user) stays in the log. Azure Blob is the
same: the operator's account (AZURE_STORAGE_*, app.media.azure), a request names a container
(one of AZURE_STORAGE_CONTAINERS when set) and a blob prefix, and the answer names the blob's
URL, never the account's SAS token.

An http_upload URL is a client's: it is checked when the request comes in and again, pinned, for
every PUT (app.core.addresses). The operator's HTTP_UPLOAD_AUTH_HEADER goes only with PUTs to
URLs under HTTP_UPLOAD_AUTH_PREFIXES (app.core.url_prefixes), never to a store a client names
elsewhere. A failed upload is never hidden: it fails the job with 502 (or `prompt.failed` when
the request was asynchronous), though what a private store answered stays in the log; URLs are
shown and logged without their user info.

Every upload streams the file from where it lies (memory, or the spool on disk), never the
whole of a large one in memory: S3 in parts (app.jobs.upload_s3), Azure in blocks
(app.jobs.upload_blob), an HTTP PUT as one request with its Content-Length, its body read in
pieces as it goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import SecretStr

from app.core.addresses import AddressPolicy, AddressRefused, Pinned
from app.core.downloads import without_userinfo
from app.core.errors import UploadFailed
from app.core.metrics import MetricsHooks
from app.core.options import AzureBlobUpload, HttpUpload, S3Upload, Upload
from app.core.outcome import ResultFile, content_type_of
from app.core.s3 import Buckets, s3_error_code
from app.core.settings import Settings
from app.core.url_prefixes import UrlPrefix, parse_prefixes
from app.jobs.upload_blob import BlobRefused, put_blob
from app.jobs.upload_s3 import put_s3_object
from app.media.azure import BlobAccount

log = logging.getLogger(__name__)


class Uploader:
    """Sends output files to the store a request names; returns where each one went."""

    def __init__(
        self,
        addresses: AddressPolicy,
        *,
        timeout_s: float,
        min_mb_per_s: float = 1.0,
        auth_header: SecretStr | None = None,
        auth_prefixes: list[UrlPrefix] | None = None,
        buckets: Buckets | None = None,
        azure: BlobAccount | None = None,
    ) -> None:
        self.http = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)
        self.timeout_s = timeout_s
        self.min_bytes_per_s = min_mb_per_s * 2**20
        self.addresses = addresses
        self.auth_header = auth_header
        self.auth_prefixes = auth_prefixes or []
        self.buckets = buckets or Buckets()
        self.azure = azure
        self._s3: Any = None
        self.metrics = MetricsHooks()
        self.on_event: Callable[[str, dict[str, Any]], None] | None = None  # system events

    @classmethod
    def from_settings(cls, settings: Settings, addresses: AddressPolicy) -> Uploader:
        return cls(
            addresses,
            timeout_s=settings.upload_timeout_s,
            min_mb_per_s=settings.upload_min_mb_per_s,
            auth_header=settings.http_upload_auth_header,
            auth_prefixes=parse_prefixes(settings.http_upload_auth_prefixes),
            buckets=Buckets.from_settings(settings),
            azure=BlobAccount.from_settings(settings),
        )

    def auth_for(self, url: str) -> dict[str, str]:
        """The operator's header, for a URL under one of its prefixes only."""
        if self.auth_header is None or not any(p.covers(url) for p in self.auth_prefixes):
            return {}
        name, _, value = self.auth_header.get_secret_value().partition(":")
        return {name.strip(): value.strip()}

    async def aclose(self) -> None:
        await self.http.aclose()

    def deadline_s(self, file: ResultFile) -> float:
        """How long the upload of this file may take in all: UPLOAD_TIMEOUT_S, plus its size
        at UPLOAD_MIN_MB_PER_S."""
        return self.timeout_s + file.size / self.min_bytes_per_s

    def too_slow(self, file: ResultFile) -> str:
        extra = file.size / self.min_bytes_per_s
        return (
            f"no answer within UPLOAD_TIMEOUT_S ({self.timeout_s:g}s) plus {extra:.1f}s for its "
            f"{file.size / 2**20:.1f} MB at UPLOAD_MIN_MB_PER_S ({self.min_bytes_per_s / 2**20:g})"
        )

    def _s3_client(self) -> Any:
        if self._s3 is None:
            import boto3  # type: ignore[import-untyped]  # imported on first use: it takes ~0.3 s and most gateways never do

            self._s3 = boto3.client("s3")
        return self._s3

    async def store(self, target: Upload, file: ResultFile) -> str:
        """Upload one file; raise UploadFailed naming it and the store's error."""
        started = time.monotonic()
        if isinstance(target, S3Upload):
            where = await self._store_s3(target, file)
        elif isinstance(target, AzureBlobUpload):
            where = await self._store_blob(target, file)
        else:
            where = await self._put(target, file)
        self.metrics.output_uploaded(file.size)
        if self.on_event is not None:  # comfyui-api's storage.file_uploaded
            seconds = round(time.monotonic() - started, 3)
            self.on_event("file_uploaded", {"url": where, "local_path": file.name,
                                            "size": file.size, "duration": seconds})  # fmt: skip
        return where

    async def _put(self, target: HttpUpload, file: ResultFile) -> str:
        """One PUT, its body streamed from wherever the file lies, with its Content-Length."""
        filename = file.name
        url = target.url_prefix.rstrip("/") + "/" + filename  # comfyui-api's join
        shown = without_userinfo(url)
        try:
            pinned = await self.addresses.pin(url)  # again: DNS may have changed since the check
        except AddressRefused as e:
            raise UploadFailed(
                f"output {filename} could not be PUT to {shown}: {e}",
                details={"filename": filename},
            ) from None
        headers = {
            "content-type": content_type_of(filename),
            "content-length": str(file.size),  # not chunked: not every store takes that
            **self.auth_for(url),
            **pinned.headers,
        }
        try:
            async with (
                asyncio.timeout(self.deadline_s(file)),  # all of it: a trickle cannot hold it
                contextlib.aclosing(file.chunks()) as body,  # its file closed, however it ends
            ):
                request = self.http.build_request(
                    "PUT", pinned.url, content=body, headers=headers, extensions=pinned.extensions,
                    timeout=self.deadline_s(file) + 1,  # its answer may come late in it
                )  # fmt: skip
                response = await self.http.send(request, stream=True)
                await response.aclose()  # the store's body is not wanted
        except TimeoutError:
            problem = self.too_slow(file)
            raise put_failed(filename, shown, pinned, problem, {"store_error": problem}) from None
        except httpx.HTTPError as e:
            raise put_failed(filename, shown, pinned, repr(e), {"store_error": repr(e)}) from e
        if response.status_code >= 300:
            status = response.status_code
            raise put_failed(filename, shown, pinned, f"HTTP {status}", {"store_status": status})
        return shown

    async def _store_s3(self, target: S3Upload, file: ResultFile) -> str:
        filename = file.name
        key = target.prefix + filename
        where = f"s3://{target.bucket}/{key}"
        if refusal := self.buckets.refusal(target.bucket):  # checked at the door too
            raise UploadFailed(f"output {filename} could not be stored at {where}: {refusal}",
                               details={"filename": filename})  # fmt: skip
        try:
            client = self._s3_client()
            async with asyncio.timeout(self.deadline_s(file)):  # its parts, all of them
                await put_s3_object(client, target.bucket, key, file, content_type_of(filename))
        except TimeoutError:
            log.warning("output %s: storing at %s failed: %s", filename, where, self.too_slow(file))
            raise UploadFailed(
                f"output {filename} could not be stored at {where}: {self.too_slow(file)}",
                details={"filename": filename, "store_error": "timeout"},
            ) from None
        except Exception as e:  # botocore raises many unrelated classes
            code = s3_error_code(e)
            log.warning("output %s: storing at %s failed: %s", filename, where, e)
            raise UploadFailed(
                f"output {filename} could not be stored at {where}: S3 answered {code}",
                details={"filename": filename, "store_error": code},
            ) from None
        return where

    async def _store_blob(self, target: AzureBlobUpload, file: ResultFile) -> str:
        filename = file.name
        blob = target.blob_prefix.removeprefix("/") + filename  # comfyui-api drops one `/`
        if self.azure is None:  # checked at the door too
            raise UploadFailed(f"output {filename}: no AZURE_STORAGE_* is set",
                               details={"filename": filename})  # fmt: skip
        where = self.azure.blob_url(target.container, blob, signed=False)
        try:
            async with asyncio.timeout(self.deadline_s(file)):  # all of it, blocks and list
                await put_blob(self.http, self.azure, target.container, blob, file,
                               content_type_of(filename))  # fmt: skip
        except (TimeoutError, httpx.HTTPError) as e:
            log.warning("output %s: storing at %s failed: %r", filename, where, e)
            problem = self.too_slow(file) if isinstance(e, TimeoutError) else type(e).__name__
            raise UploadFailed(f"output {filename} could not be stored at {where}: {problem}",
                               details={"filename": filename}) from None  # fmt: skip
        except BlobRefused as e:
            log.warning("output %s: Azure refused %s: %s", filename, where, e.text)
            raise UploadFailed(
                f"output {filename} could not be stored at {where}: Azure Blob answered {e.code}",
                details={"filename": filename, "store_error": e.code},
            ) from None
        return where


def put_failed(
    filename: str, url: str, pinned: Pinned, problem: str, details: dict[str, Any]
) -> UploadFailed:
    """The error a failed PUT fails its job with: the store's answer only when it is public.

    A store at a private address (let through by ALLOWED_PRIVATE_NETWORKS or ALLOW_PRIVATE_URLS)
    is an internal service: its status, or whether it answered at all, would let a client map
    the network behind the gateway. The log keeps it for the operator. No body is ever echoed.
    """
    if not pinned.private:
        message = f"output {filename} could not be PUT to {url}: {problem}"
        return UploadFailed(message, details={"filename": filename, **details})
    log.warning("output %s: PUT to %s (%s) failed: %s", filename, url, pinned.address, problem)
    return UploadFailed(
        f"output {filename} could not be PUT to {url}: the store, at a private address, did not "
        "take it; the gateway's log has its answer",
        details={"filename": filename},
    )
