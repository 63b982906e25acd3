"""One model download as requesters see it: its state, its progress to follow, its outcome.

A download is shared by everyone who asked for the same file at the same time (single flight):
each requester waits on the same record and gets the outcome located at its own request
(`url`, `prompt.4.inputs.lora_name`), and each job among them holds the file from the moment
it lands, so that no other download can evict it before the job is submitted. A download is the
key's that started it (it counts against that key's KEY_LIMITS max_downloads) and is shown to
the keys that asked for it, and to admin keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from app.core.downloads import DownloadStatus, ModelDownloadState, redact
from app.core.errors import GatewayError
from app.core.keys import Caller
from app.models.cache import Entry, Hold
from app.models.credentials import Credentials
from app.models.transfer import Transfer


@dataclass(frozen=True)
class Spec:
    """What to download, and on whose behalf."""

    url: str
    folder: str
    filename: str | None  # None: the name the source gives, made unique in the folder
    sha256: str | None
    pin: bool
    trusted: bool  # the operator's (the manifest): no address policy
    url_key: str  # sha256 of the URL
    fingerprint: str  # of the credentials it uses (downloads with different ones never merge)
    authed: bool = False  # with a client's own credentials: a later request must prove its own

    @classmethod
    def of(
        cls, url: str, folder: str, filename: str | None, sha256: str | None,
        credentials: Credentials,
    ) -> Spec:  # fmt: skip
        """A download for a client (not pinned, not trusted; `replace` changes that)."""
        return cls(
            url=url, folder=folder, filename=filename, sha256=sha256.lower() if sha256 else None,
            pin=False, trusted=False, url_key=hashlib.sha256(url.encode()).hexdigest(),
            fingerprint=credentials.fingerprint(url), authed=credentials.has_client_auth(url),
        )  # fmt: skip

    @property
    def flight(self) -> tuple[str, str, str | None, str]:
        return (self.folder, self.url_key, self.filename, self.fingerprint)


@dataclass(eq=False)
class Download:
    """One download, from its request until a while after it ended."""

    id: str
    spec: Spec
    where: str  # the location its first requester gave; errors are relocated per requester
    owner: str | None = None  # the id of the key that started it (None: no keys, the manifest)
    askers: set[str | None] = field(default_factory=set)  # the ids of the keys that asked
    filename: str | None = None
    status: DownloadStatus = "queued"
    transfer: Transfer | None = None
    fetched: bool = False
    present_bytes: int = 0  # the size of a file that was there already
    sha256: str | None = None
    error: GatewayError | None = None
    started: float = field(default_factory=time.monotonic)
    holds: list[Hold] = field(default_factory=list)  # of the jobs waiting for it
    key: str | None = None  # the cache entry's, once handed over
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")

    def shown_to(self, caller: Caller) -> bool:
        """Whether the caller may see this download: it asked for it, or is an admin key."""
        return caller.admin or caller.id == self.owner or caller.id in self.askers

    def hand_over(self, entry: Entry | None) -> None:
        """The file is in place: every job waiting for it holds it from now on."""
        if entry is not None:
            self.key = entry.key
            for hold in self.holds:
                hold.add(entry.key)

    def landed(self, entry: Entry | None, filename: str, *, fetched: bool, size: int) -> None:
        """The file is in place and ComfyUI lists it: the download is done."""
        if self.key is None:
            self.hand_over(entry)
        self.filename, self.fetched, self.present_bytes = filename, fetched, size
        self.sha256 = entry.sha256 if entry is not None else None
        self.status = "done"
        self.done.set()

    def failed(self, error: GatewayError) -> None:
        self.error, self.status = error, "failed"
        self.done.set()

    def state(self) -> ModelDownloadState:
        transfer = self.transfer
        done_bytes = transfer.have if transfer else 0
        return ModelDownloadState(
            id=self.id,
            url=redact(self.spec.url),
            folder=self.spec.folder,
            filename=self.filename,
            status=self.status,
            bytes=self.present_bytes if self.status == "done" else done_bytes,
            total=(transfer.total if transfer else None)
            if self.status != "done"
            else self.present_bytes,
            fetched=self.fetched,
            resumed=transfer.resumed if transfer else 0,
            sha256=self.sha256,
            error=self.error_at(self.where).body() if self.error else None,
        )

    def error_at(self, where: str) -> GatewayError:
        """The failure, located at one requester's own input."""
        assert self.error is not None
        error = self.error
        if error.location in (None, where) or self.where == where:
            return error
        message = error.message.replace(f"{self.where}: ", f"{where}: ", 1)
        relocated = type(error)(message, location=where, details=error.details)
        relocated.headers = error.headers
        return relocated

    async def outcome(self, where: str, hold: Hold | None = None) -> str:
        """Wait for the file; its name, or the failure located at `where`. A job's hold gets
        the file the moment it lands."""
        if hold is not None and self.key is not None:
            hold.add(self.key)
        elif hold is not None and not self.done.is_set():
            self.holds.append(hold)
        await self.done.wait()
        if self.error is not None:
            raise self.error_at(where)
        assert self.filename is not None
        return self.filename

    async def follow(
        self, every_s: float = 0.25, heartbeat_s: float = 15.0
    ) -> AsyncIterator[ModelDownloadState | None]:
        """The state whenever it changed (at most every `every_s`), None as a heartbeat, until
        the download ends."""
        last: Any = None
        quiet_s = 0.0
        while True:
            state = self.state()
            seen = (state.status, state.bytes, state.total, state.filename)
            if seen != last:
                last, quiet_s = seen, 0.0
                yield state
            elif quiet_s >= heartbeat_s:
                quiet_s = 0.0
                yield None
            if self.finished:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.done.wait(), every_s)
            quiet_s += every_s
