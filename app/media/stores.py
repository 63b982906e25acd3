"""Inputs from the operator's stores: `s3://bucket/key` and Azure blob URLs.

The endpoint and credentials are the operator's (AWS_* as for output uploads and model files;
AZURE_STORAGE_*), so no address check applies to them; a request names only a bucket or
container (one of S3_BUCKETS / AZURE_STORAGE_CONTAINERS when set) and a key. The same size cap
and deadline hold as for http(s) inputs. A failure shows the store's error code, never its
message (it may name the operator's account or endpoint).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from app.core.errors import InputError
from app.core.s3 import Buckets, s3_error_code
from app.core.settings import Settings
from app.media.azure import BlobAccount, BlobUrlError, container_and_blob, is_blob_url

log = logging.getLogger(__name__)
READ_BYTES = 2**20


class StoreInputs:
    """Reads an input from S3 or Azure Blob, held to INPUT_MAX_MB."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient) -> None:
        self.max_bytes = settings.input_max_bytes
        self.buckets = Buckets.from_settings(settings)
        self.containers = frozenset(settings.azure_storage_containers)
        self.azure = BlobAccount.from_settings(settings)
        self.http = http
        self._s3: Any = None

    def handles(self, url: str) -> bool:
        return url[:5].lower() == "s3://" or (self.azure is not None and is_blob_url(url))

    async def read(self, url: str, where: str, too_large: Callable[[], InputError]) -> bytes:
        if url[:5].lower() == "s3://":
            return await self._read_s3(url, where, too_large)
        return await self._read_blob(url, where, too_large)

    async def _read_s3(self, url: str, where: str, too_large: Callable[[], InputError]) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

        parts = urlsplit(url)
        bucket, key = parts.netloc, unquote(parts.path.lstrip("/"))
        if not bucket or not key:
            raise InputError(f"{where}: an s3:// URL names a bucket and a key", location=where)
        if refusal := self.buckets.refusal(bucket):
            raise InputError(f"{where}: {refusal}", location=where)
        try:
            answer = await asyncio.to_thread(self._client().get_object, Bucket=bucket, Key=key)
        except ClientError as e:
            log.warning("%s: S3 refused s3://%s/%s: %s", where, bucket, key, e)
            raise InputError(f"{where}: S3 answered {s3_error_code(e)}", location=where) from None
        except BotoCoreError as e:
            log.warning("%s: reading s3://%s/%s failed: %s", where, bucket, key, e)
            raise InputError(f"{where}: S3 failed: {type(e).__name__}", location=where) from None
        body = answer["Body"]
        try:
            if int(answer.get("ContentLength") or 0) > self.max_bytes:
                raise too_large()
            return await self._capped(_chunks(body), too_large)
        finally:
            body.close()

    def _client(self) -> Any:
        if self._s3 is None:
            import boto3  # type: ignore[import-untyped]  # ~0.3 s: only when an input is on S3

            self._s3 = boto3.client("s3")
        return self._s3

    async def _read_blob(self, url: str, where: str, too_large: Callable[[], InputError]) -> bytes:
        assert self.azure is not None  # handles() said so
        try:
            container, blob = container_and_blob(url, self.azure)
        except BlobUrlError as e:
            raise InputError(f"{where}: {e}", location=where) from None
        if self.containers and container not in self.containers:
            raise InputError(
                f"{where}: the container {container!r} is not one this gateway's Azure "
                f"credentials serve (AZURE_STORAGE_CONTAINERS: {', '.join(sorted(self.containers))}"
                ")",
                location=where,
            )
        target = self.azure.blob_url(container, blob)
        headers = self.azure.signed_headers("GET", target)
        async with self.http.stream("GET", target, headers=headers) as response:
            if response.status_code != 200:
                code = response.headers.get("x-ms-error-code") or f"HTTP {response.status_code}"
                log.warning("%s: Azure refused %s/%s: %s", where, container, blob, code)
                raise InputError(f"{where}: Azure Blob answered {code}", location=where)
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise too_large()
            return await self._capped(response.aiter_bytes(), too_large)

    async def _capped(
        self, chunks: AsyncIterator[bytes], too_large: Callable[[], InputError]
    ) -> bytes:
        got: list[bytes] = []
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > self.max_bytes:
                raise too_large()
            got.append(chunk)
        return b"".join(got)


async def _chunks(body: Any) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(body.read, READ_BYTES):
        yield chunk
