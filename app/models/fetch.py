"""Fetching one model file into a temporary file: HTTP(S) resumed with `Range`, or S3.

A transfer that breaks (a connection reset, a stall past MODEL_DOWNLOAD_TIMEOUT_S, a connection
slower than MODEL_DOWNLOAD_MIN_KIB_PER_S over that time, a body cut short, a 5xx or 429) is
resumed from the bytes already on disk, with `If-Range` so that a file that changed meanwhile
starts over, up to MODEL_DOWNLOAD_RETRIES times. However it trickles, a download ends within
MODEL_DOWNLOAD_MAX_S, resumes included. Every hop of a client's
URL, redirects included, is checked and pinned by the address policy (app.core.addresses), and
carries only the credential whose prefix matches that hop (app.models.credentials).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
from pathlib import Path
from typing import IO
from urllib.parse import urljoin, urlsplit

import httpx

from app.core.addresses import AddressPolicy, AddressRefused, Pinned
from app.core.errors import InsufficientStorage, InvalidRequest
from app.models.s3 import S3Source
from app.models.transfer import (
    Broken,
    Pace,
    Transfer,
    Writer,
    disposition_name,
    failed,
    sync,
)

log = logging.getLogger(__name__)

MAX_REDIRECTS = 10
# Why a model cannot be written: no room, a quota, a read-only or foreign folder.
UNWRITABLE = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR}
)
CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class Fetcher:
    """Downloads model files with resume; one HTTP client for all of them."""

    def __init__(
        self,
        addresses: AddressPolicy,
        *,
        timeout_s: float,
        retries: int,
        min_bytes_per_s: float = 0.0,
        max_s: float = 3600.0,
    ) -> None:
        self.addresses = addresses
        self.retries = retries
        self.timeout_s = timeout_s
        self.min_bytes_per_s = min_bytes_per_s
        self.max_s = max_s
        self.http = httpx.AsyncClient(
            follow_redirects=False, timeout=httpx.Timeout(timeout_s, connect=10.0)
        )
        self.s3 = S3Source()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def fetch(self, transfer: Transfer, temp: Path) -> None:
        """Fill temp with the file; its sha256 is then transfer.hasher's."""
        try:
            file = await asyncio.to_thread(temp.open, "wb")
            try:
                try:
                    async with asyncio.timeout(self.max_s):
                        await self._fetch(transfer, file)
                except TimeoutError:
                    limit = f"MODEL_DOWNLOAD_MAX_S ({self.max_s:g}s)"
                    raise failed(transfer, f"it took longer than {limit}") from None
                await asyncio.to_thread(sync, file)
            finally:
                await asyncio.to_thread(file.close)
        except OSError as e:
            if e.errno not in UNWRITABLE:
                raise
            raise InsufficientStorage(
                f"{transfer.where}: cannot write the model into {temp.parent}: {e.strerror} "
                "(MODEL_CACHE_DIR must be a writable folder with room)",
                location=transfer.where,
            ) from None

    async def _fetch(self, transfer: Transfer, file: IO[bytes]) -> None:
        failures = 0
        while True:
            transfer.pace = Pace(self.min_bytes_per_s, self.timeout_s)  # per connection
            try:
                if transfer.url.lower().startswith("s3://"):
                    await self.s3.receive(transfer, file)
                else:
                    await self._follow(transfer, file)
                break
            except Broken as e:
                failures += 1
                if failures > self.retries:
                    raise failed(transfer, f"it broke off {failures} times; last: {e}") from None
                transfer.resumed += 1
                log.warning(
                    "download of %s broke off at %d bytes (%s): resuming",
                    transfer.shown(), transfer.have, e,
                )  # fmt: skip
                await asyncio.sleep(min(0.25 * 2 ** (failures - 1), 10.0))
        if transfer.total is not None and transfer.have != transfer.total:
            raise failed(transfer, f"{transfer.have} of its {transfer.total} bytes came")

    async def _follow(self, transfer: Transfer, file: IO[bytes]) -> None:
        url = transfer.url
        for _ in range(MAX_REDIRECTS + 1):
            # Credentials are matched per hop: a redirect to another host gets none.
            credentials = transfer.credentials
            headers = {"Accept-Encoding": "identity", **credentials.headers(url, transfer.url)}
            if transfer.have:
                headers["Range"] = f"bytes={transfer.have}-"
                if transfer.validator:
                    headers["If-Range"] = transfer.validator
            target, extensions = credentials.url_for(url, transfer.url), {}
            if not transfer.trusted:
                pinned = await self.pin(target, transfer.where)
                target, extensions = pinned.url, pinned.extensions
                headers.update(pinned.headers)
                transfer.private = pinned.private
            try:
                async with self.http.stream(
                    "GET", target, headers=headers, extensions=extensions
                ) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        if urlsplit(url).scheme not in ("http", "https"):
                            raise failed(transfer, "it redirected to a URL that is not http(s)")
                        continue
                    await self._receive(transfer, response, file)
                    return
            except httpx.TimeoutException:
                raise Broken("nothing came for MODEL_DOWNLOAD_TIMEOUT_S") from None
            except httpx.TransportError as e:
                raise Broken(f"{type(e).__name__}: {e}") from None
        raise failed(transfer, f"more than {MAX_REDIRECTS} redirects")

    async def _receive(self, transfer: Transfer, response: httpx.Response, file: IO[bytes]) -> None:
        status = response.status_code
        if status == 416 and transfer.total is not None and transfer.have == transfer.total:
            return  # every byte had come; only the end of the last answer was lost
        if status == 206:
            match = CONTENT_RANGE.match(response.headers.get("content-range", ""))
            if match is None or int(match.group(1)) != transfer.have:
                await transfer.restart(file)
                raise Broken("the server resumed at another offset than asked")
            transfer.sized(None if match.group(3) == "*" else int(match.group(3)))
        elif status == 200:
            if transfer.have:
                await transfer.restart(file)  # Range ignored, or the file changed (If-Range)
            length = response.headers.get("content-length", "")
            etag = response.headers.get("etag", "")
            strong = etag if etag and not etag.startswith("W/") else None
            transfer.validator = strong or response.headers.get("last-modified")
            transfer.filename = transfer.filename or disposition_name(response.headers)
            transfer.sized(int(length) if length.isdigit() else None)
        elif status == 429 or status >= 500:
            raise Broken(f"HTTP {status}")
        elif status == 416:
            await transfer.restart(file)
            raise Broken("HTTP 416: the file is not as long as before")
        else:
            raise failed(transfer, f"the server answered HTTP {status}", status)
        writer = Writer(file, transfer.grow)
        try:
            async for chunk in response.aiter_raw():
                transfer.took(chunk)
                await writer.add(chunk)
        finally:
            await writer.flush()  # what was counted is on disk: the resume starts after it

    async def pin(self, url: str, where: str) -> Pinned:
        try:
            return await self.addresses.pin(url)
        except AddressRefused as e:
            raise InvalidRequest(f"{where}: {e}", location=where) from None
