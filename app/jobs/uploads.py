"""Uploads instead of base64: each output to S3 (or an S3-compatible store) or PUT over HTTP.

S3 credentials, region and endpoint come from the usual AWS variables (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL for S3-compatible stores): a request names
only a bucket, never an endpoint, so there is no address of a client's to check. An http_upload
URL is a client's: it is checked when the request comes in and again, pinned, for every PUT
(app.core.addresses). A failed upload is never hidden: it fails the job with 502 (or `prompt.failed`
when the request was asynchronous), though what a private store answered stays in the log.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
from typing import Any

import httpx

from app.core.addresses import AddressPolicy, AddressRefused, Pinned
from app.core.errors import UploadFailed
from app.core.metrics import MetricsHooks
from app.core.options import HttpUpload, S3Upload

log = logging.getLogger(__name__)


def content_type(filename: str) -> str:
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


class Uploader:
    """Sends output files to the store a request names; returns where each one went."""

    def __init__(
        self, http_auth_header: str | None, timeout_s: float, addresses: AddressPolicy
    ) -> None:
        headers: dict[str, str] = {}
        if http_auth_header:
            name, _, value = http_auth_header.partition(":")
            headers[name.strip()] = value.strip()
        self.http = httpx.AsyncClient(headers=headers, timeout=timeout_s, follow_redirects=False)
        self.timeout_s = timeout_s
        self.addresses = addresses
        self._s3: Any = None
        self.metrics = MetricsHooks()

    async def aclose(self) -> None:
        await self.http.aclose()

    def _s3_client(self) -> Any:
        if self._s3 is None:
            import boto3  # type: ignore[import-untyped]  # imported on first use: it takes ~0.3 s and most gateways never do

            self._s3 = boto3.client("s3")
        return self._s3

    async def store(self, target: S3Upload | HttpUpload, filename: str, data: bytes) -> str:
        """Upload one file; raise UploadFailed naming it and the store's error."""
        if isinstance(target, S3Upload):
            key = target.prefix + filename
            try:
                await asyncio.to_thread(
                    self._s3_client().put_object,
                    Bucket=target.bucket, Key=key, Body=data, ContentType=content_type(filename),
                )  # fmt: skip
            except Exception as e:  # botocore raises many unrelated classes
                raise UploadFailed(
                    f"output {filename} could not be stored at s3://{target.bucket}/{key}: {e}",
                    details={"filename": filename, "store_error": str(e)},
                ) from e
            self.metrics.output_uploaded(len(data))
            return f"s3://{target.bucket}/{key}"
        url = target.url_prefix + filename
        try:
            pinned = await self.addresses.pin(url)  # again: DNS may have changed since the check
        except AddressRefused as e:
            raise UploadFailed(
                f"output {filename} could not be PUT to {url}: {e}", details={"filename": filename}
            ) from None
        headers = {"content-type": content_type(filename), **pinned.headers}
        request = self.http.build_request(
            "PUT", pinned.url, content=data, headers=headers, extensions=pinned.extensions
        )
        try:
            async with asyncio.timeout(self.timeout_s):  # all of it: a trickle cannot hold it
                response = await self.http.send(request, stream=True)
                await response.aclose()  # the store's body is not wanted
        except TimeoutError:
            problem = f"no answer within UPLOAD_TIMEOUT_S ({self.timeout_s:g}s)"
            raise put_failed(filename, url, pinned, problem, {"store_error": problem}) from None
        except httpx.HTTPError as e:
            raise put_failed(filename, url, pinned, repr(e), {"store_error": repr(e)}) from e
        if response.status_code >= 300:
            status = response.status_code
            raise put_failed(filename, url, pinned, f"HTTP {status}", {"store_status": status})
        self.metrics.output_uploaded(len(data))
        return url


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
