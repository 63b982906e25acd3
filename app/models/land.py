"""One download's way into the cache: the file already there, or fetched under a hidden
temporary name, checked (size, sha256) and renamed into place; then listed by ComfyUI.

The model store (app.models.store) owns one Lander and lands each download it starts with it.
The transfer takes room in the cache as its bytes arrive (app.models.transfer); whatever fails
leaves no file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable

from app.core.downloads import redact
from app.core.errors import Conflict, DownloadFailed, InvalidRequest
from app.core.metrics import MetricsHooks
from app.models.cache import TEMP_SUFFIX, Entry, ModelCache, Reservation, size_text
from app.models.credentials import Credentials
from app.models.downloads import Download, Spec
from app.models.fetch import Fetcher
from app.models.proof import prove_access
from app.models.transfer import Transfer, name_in
from app.models.watch import ModelWatch

log = logging.getLogger(__name__)


class Lander:
    """Lands downloads in one cache, one file at a time each, never two under one name."""

    def __init__(
        self,
        cache: ModelCache,
        fetcher: Fetcher,
        watch: ModelWatch,
        metrics: MetricsHooks,
        on_fetched: Callable[[Entry, float], None],
    ) -> None:
        self.cache = cache
        self.fetcher = fetcher
        self.watch = watch
        self.metrics = metrics
        self.on_fetched = on_fetched  # a file was fetched, in so many seconds (a system event)
        self.writing: set[str] = set()  # `folder/name` of files on their way

    async def land(self, download: Download, credentials: Credentials) -> None:
        """Have the download's file in place (fetched, or there already) and listed by
        ComfyUI."""
        spec, where, cache = download.spec, download.where, self.cache
        there = self.present(spec, where)
        if there is not None and there[0] is not None and there[0].auth_required:
            await self._prove(there[0], spec, where, credentials)
        if there is not None:
            entry, name, size = there
            if entry is not None:
                cache.touch(entry)
                if spec.pin and not entry.pinned:
                    entry.pinned = True
                    cache.save()
            download.landed(entry, name, fetched=False, size=size)
            return
        started = time.monotonic()
        entry, transfer = await self._fetch(download, credentials)
        cache.add(entry)
        download.hand_over(entry)
        seconds = time.monotonic() - started
        log.info(
            "downloaded %s (%s in %.1fs, %s/s, resumed %d time(s)) from %s",
            entry.key, size_text(entry.bytes), seconds,
            size_text(entry.bytes / max(seconds, 1e-3)), transfer.resumed, entry.source,
        )  # fmt: skip
        self.on_fetched(entry, seconds)
        await self.watch.refresh()  # the enums list it before the download says it is done
        if not self.watch.lists(spec.folder, entry.filename):
            log.warning(
                "ComfyUI does not list %s: does it search %s? (MODEL_CACHE_DIR)",
                entry.key, cache.root,
            )  # fmt: skip
        download.landed(entry, entry.filename, fetched=True, size=entry.bytes)

    async def _prove(self, entry: Entry, spec: Spec, where: str, credentials: Credentials) -> None:
        """A file first fetched with a client's credentials: this request proves its own."""
        if spec.trusted:
            return
        if entry.url_key != spec.url_key:
            raise Conflict(
                f"{where}: {entry.key} is already there, downloaded from another source with "
                "credentials; choose another filename",
                location=where,
            )
        await prove_access(self.fetcher, spec.url, credentials, where)

    def present(self, spec: Spec, where: str) -> tuple[Entry | None, str, int] | None:
        """(entry, name, size) of a file that is already there for this spec, or None."""
        cache = self.cache
        if spec.filename is None:
            entry = cache.find(spec.folder, spec.url_key)
            return (entry, entry.filename, entry.bytes) if entry is not None else None
        path = cache.path(spec.folder, spec.filename)
        if not path.exists():
            return None
        entry = cache.get(spec.folder, spec.filename)
        if entry is not None and spec.sha256 and entry.sha256 != spec.sha256:
            raise Conflict(
                f"{where}: {spec.folder}/{spec.filename} is already there with sha256 "
                f"{entry.sha256}; choose another filename",
                location=where,
            )
        return entry, spec.filename, path.stat().st_size

    def free_name(self, spec: Spec, name: str) -> str:
        """name, or, where another file has it, name with a piece of the URL's hash."""
        path = self.cache.path(spec.folder, name)
        taken = f"{spec.folder}/{name}" in self.writing or path.exists()
        if spec.filename is not None or not taken:
            return name
        stem, _, extension = name.rpartition(".")
        return f"{stem}-{spec.url_key[:8]}.{extension}"

    async def _fetch(self, download: Download, credentials: Credentials) -> tuple[Entry, Transfer]:
        """Fetch the file under a hidden name, check it and rename it into place; its entry (not
        yet in the cache's index)."""
        spec, where, cache = download.spec, download.where, self.cache
        folder = cache.root / spec.folder
        with contextlib.suppress(OSError):  # a folder it cannot make: the download says why
            folder.mkdir(parents=True, exist_ok=True)
        given = spec.filename or name_in(spec.url)
        target = self.free_name(spec, given) if given else None
        temp = folder / f".{target or 'model'}.{download.id}{TEMP_SUFFIX}"
        reservation = Reservation()
        transfer = Transfer(
            spec.url, where, credentials, spec.trusted,
            room=lambda size: cache.reserve(reservation, size, folder),
            fits=lambda size: cache.fits(reservation, size, folder),
        )  # fmt: skip
        reservation.written = lambda: transfer.have
        download.transfer, download.status = transfer, "downloading"
        claimed = {f"{spec.folder}/{target}"} if target else set()
        self.writing |= claimed
        ok, digest = False, ""
        try:
            await self.fetcher.fetch(transfer, temp)
            digest = transfer.hasher.hexdigest()
            if spec.sha256 and digest != spec.sha256:
                raise DownloadFailed(
                    f"{where}: {transfer.shown()} has sha256 {digest}, not the {spec.sha256} "
                    "asked for: the download was deleted",
                    location=where,
                    details={"expected_sha256": spec.sha256, "actual_sha256": digest},
                )
            if target is None and transfer.filename is not None:
                target = self.free_name(spec, transfer.filename)
            if target is None:
                raise InvalidRequest(
                    f"{where}: {transfer.shown()} gives no file name (none in its path, no "
                    "Content-Disposition): download it with POST /models/download and a "
                    "filename",
                    location=where,
                )
            if (folder / target).exists():  # put there meanwhile: not the gateway's to replace
                raise Conflict(
                    f"{where}: {spec.folder}/{target} appeared meanwhile", location=where
                )
            await asyncio.to_thread(os.replace, temp, folder / target)
            ok = True
        finally:
            if not ok:
                with contextlib.suppress(OSError):  # never there, or where nothing can be
                    temp.unlink()
            self.writing -= claimed
            cache.release(reservation)
            self.metrics.model_download_ended(transfer.received, ok=ok)
        now = time.time()
        entry = Entry(
            folder=spec.folder, filename=target, bytes=transfer.have, sha256=digest,
            source=redact(spec.url), url_key=spec.url_key, downloaded_at=now, last_used=now,
            pinned=spec.pin, owner=download.owner, auth_required=spec.authed,
        )  # fmt: skip
        return entry, transfer
