"""One model file on its way into a temporary file: how far it got, its hash so far, the room it
takes in the cache, how slow it may be, and how its failures are told (app.models.fetch for
HTTP, app.models.s3 for S3 fill it).

Room in the cache is taken for the bytes that arrived, before each piece of them is written
(Writer): a size the source declares is only checked against what could ever fit.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import unquote

import httpx

from app.core.downloads import FILENAME, redact
from app.core.errors import DownloadFailed, InsufficientStorage
from app.models.credentials import Credentials

log = logging.getLogger(__name__)

DISPOSITION = re.compile(r"""filename\*=(?:UTF-8|utf-8)''([^;]+)|filename="?([^";]+)"?""")


class Broken(Exception):
    """The transfer broke where resuming may help; the message says how, for people."""


@dataclass
class Pace:
    """The slowest one connection of a transfer may go, from its first byte (a silence before
    it is MODEL_DOWNLOAD_TIMEOUT_S's): at least `min_bytes_per_s` on average over every
    `window_s`, else it is Broken (and resumed, up to MODEL_DOWNLOAD_RETRIES times)."""

    min_bytes_per_s: float
    window_s: float
    since: float | None = None
    got: int = 0

    def took(self, size: int) -> None:
        if not self.min_bytes_per_s:
            return
        if self.since is None:
            self.since = time.monotonic()
        self.got += size
        seconds = time.monotonic() - self.since
        if seconds < self.window_s:
            return
        if self.got < self.min_bytes_per_s * seconds:
            rate = self.got / seconds / 1024
            raise Broken(
                f"{rate:.1f} KiB/s over {seconds:.0f}s, slower than MODEL_DOWNLOAD_MIN_KIB_PER_S "
                f"({self.min_bytes_per_s / 1024:g})"
            )
        self.since, self.got = time.monotonic(), 0


@dataclass
class Transfer:
    """One file on its way: where it comes from, how far it got, its sha256 so far."""

    url: str
    where: str  # the request's location for errors: `url`, `prompt.1.inputs.ckpt_name`
    credentials: Credentials
    trusted: bool  # the operator's URL (the manifest): the address policy does not apply
    room: Callable[[int], None]  # take room for this many bytes in all (arrived); raises if none
    fits: Callable[[int], None]  # a declared size: raises if it could never fit; takes nothing
    pace: Pace | None = None  # set by the fetcher for each connection
    have: int = 0  # bytes on disk so far (or on their way there)
    total: int | None = None
    resumed: int = 0
    received: int = 0  # over the network, including bytes thrown away on a restart
    filename: str | None = None  # the name the source gives (Content-Disposition)
    private: bool = False  # the last hop was at a private address
    validator: str | None = None  # ETag or Last-Modified: resume only the same file
    hasher: Any = field(default_factory=hashlib.sha256)

    def shown(self) -> str:
        return redact(self.url)

    def sized(self, total: int | None) -> None:
        """The source said how large the file is: refuse it now if it could never fit."""
        self.total = total
        if total is not None:
            self._located(self.fits, total)

    def grow(self) -> None:
        """Take room for every byte that arrived, before the pending ones are written."""
        self._located(self.room, self.have)

    def _located(self, ask: Callable[[int], None], size: int) -> None:
        try:
            ask(size)
        except InsufficientStorage as e:
            raise InsufficientStorage(f"{self.where}: {e.message}", location=self.where) from None

    def took(self, chunk: bytes) -> None:
        """Count and hash bytes that arrived (the caller writes them); Broken when the
        connection is slower than its pace allows."""
        self.received += len(chunk)
        self.have += len(chunk)
        self.hasher.update(chunk)
        if self.total is not None and self.have > self.total:
            raise failed(self, "more bytes came than the source announced")
        if self.pace is not None:
            self.pace.took(len(chunk))

    async def restart(self, file: IO[bytes]) -> None:
        """Throw away what arrived: the source cannot resume it."""
        await asyncio.to_thread(_truncate, file)
        self.have = 0
        self.hasher = hashlib.sha256()
        self.validator = None


def failed(transfer: Transfer, problem: str, status: int | None = None) -> DownloadFailed:
    """The remote's failure, located; what a private one said stays in the log."""
    where, shown = transfer.where, transfer.shown()
    if transfer.private:
        log.warning("%s: download of %s failed: %s", where, shown, problem)
        return DownloadFailed(
            f"{where}: {shown} could not be downloaded: the server, at a private address, did "
            "not deliver it; the gateway's log has its answer",
            location=where,
        )
    details = {"remote_status": status} if status is not None else None
    return DownloadFailed(
        f"{where}: {shown} could not be downloaded: {problem}", location=where, details=details
    )


def name_in(url: str) -> str | None:
    """The file name a URL's path ends with, if it is a plain one with an extension."""
    last = url.split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    name = unquote(last)
    return name if FILENAME.match(name) else None


def disposition_name(headers: httpx.Headers) -> str | None:
    """The file name a Content-Disposition header gives, if it is a plain one."""
    match = DISPOSITION.search(headers.get("content-disposition", ""))
    if match is None:
        return None
    name = unquote(match.group(1) or match.group(2) or "").strip()
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    return name if FILENAME.match(name) else None


class Writer:
    """Writes what arrives in pieces of a few MiB, off the event loop, each once the cache has
    room for it (`before`: Transfer.grow)."""

    PIECE = 4 * 2**20

    def __init__(self, file: IO[bytes], before: Callable[[], None]) -> None:
        self.file = file
        self.before = before
        self.pending: list[bytes] = []
        self.size = 0

    async def add(self, chunk: bytes) -> None:
        self.pending.append(chunk)
        self.size += len(chunk)
        if self.size >= self.PIECE:
            await self.flush()

    async def flush(self) -> None:
        if self.pending:
            data, self.pending, self.size = b"".join(self.pending), [], 0
            self.before()
            await asyncio.to_thread(self.file.write, data)


def _truncate(file: IO[bytes]) -> None:
    file.seek(0)
    file.truncate()


def sync(file: IO[bytes]) -> None:
    """The bytes are on disk before the file is renamed into place."""
    file.flush()
    os.fsync(file.fileno())
