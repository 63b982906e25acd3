"""The model store: models named by URL land in ComfyUI's model folders before a job needs them.

A file lands under MODEL_CACHE_DIR/<folder>/ by way of a hidden temporary name beside it
(`.<name>.<id>.gw-part`, which ComfyUI does not list), its size and sha256 checked, then an
atomic rename: there is never a half file under a model's name, and a failed or mismatched
download leaves nothing. Everyone asking for the same file at once shares one download.

A download says it is done only once ComfyUI lists the file and the store's watch
(app.jobs.model_watch) has told its listeners: the workflow enums already name it then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections import OrderedDict
from dataclasses import replace
from typing import Any

from app.comfy.client import ComfyClient
from app.comfy.graph import Graph
from app.core.addresses import AddressPolicy, AddressRefused
from app.core.downloads import ModelDownloadRequest, redact
from app.core.errors import (
    ComfyUnavailable,
    Conflict,
    DownloadFailed,
    Forbidden,
    GatewayError,
    InvalidRequest,
    NotFound,
)
from app.core.metrics import MetricsHooks
from app.core.options import JobOptions
from app.core.settings import Settings
from app.jobs.model_auth import Credentials
from app.jobs.model_cache import TEMP_SUFFIX, Entry, Hold, ModelCache, Reservation, size_text
from app.jobs.model_downloads import Download, Spec
from app.jobs.model_fetch import Fetcher
from app.jobs.model_refs import prepare
from app.jobs.model_transfer import Transfer, name_in
from app.jobs.model_watch import ModelWatch
from app.jobs.webhooks import SystemEvents

log = logging.getLogger(__name__)

KEEP_FINISHED = 200  # downloads GET /models/downloads still shows after they ended


class ModelStore:
    """Downloads, the cache they go to, and what jobs hold; one per gateway process."""

    def __init__(
        self,
        settings: Settings,
        client: ComfyClient,
        addresses: AddressPolicy,
        events: SystemEvents | None = None,
    ) -> None:
        cap = settings.model_cache_max_gb
        self.cache = ModelCache(
            settings.model_cache_path, int(cap * 2**30) if cap else None, self._evicted
        )
        self.fetcher = Fetcher(
            addresses,
            timeout_s=settings.model_download_timeout_s,
            retries=settings.model_download_retries,
            max_s=settings.model_download_max_s,
        )
        self.addresses = addresses
        self.credentials = Credentials.from_settings(settings)
        self.enabled = settings.model_downloads
        self.client = client
        self.events = events
        self.metrics = MetricsHooks()  # the Gateway hands in its GatewayMetrics
        self.watch = ModelWatch(client, self._tick)
        self.flights: dict[tuple[str, str, str | None, str], Download] = {}
        self.writing: set[str] = set()  # `folder/name` of files on their way
        self.downloads: OrderedDict[str, Download] = OrderedDict()
        self._folders: list[str] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def aclose(self) -> None:
        await self.watch.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.cache.dirty:
            self.cache.save()
        await self.fetcher.aclose()

    # -- what routes ask ---------------------------------------------------------------------
    async def request(
        self, body: ModelDownloadRequest, *, trusted: bool = False, where: str = "url"
    ) -> Download:
        """Start (or join) a download; a bad folder or refused address raises at once."""
        if not self.enabled and not trusted:
            raise Forbidden("model downloads are off on this gateway (MODEL_DOWNLOADS=false)")
        await self.check_folder(body.folder, "folder")
        credentials = self.credentials
        if body.auth is not None:
            credentials = Credentials.for_host_of(body.url, body.auth).before(credentials)
        if not trusted and not body.url.lower().startswith("s3://"):
            try:
                await self.addresses.check(body.url)
            except AddressRefused as e:
                raise InvalidRequest(f"{where}: {e}", location=where) from None
        spec = Spec.of(body.url, body.folder, body.filename, body.sha256, credentials)
        return self.start(replace(spec, pin=body.pin, trusted=trusted), credentials, where)

    def get(self, download_id: str) -> Download:
        found = self.downloads.get(download_id)
        if found is None:
            raise NotFound(f"this gateway knows no download {download_id!r}", location="id")
        return found

    # -- what jobs ask -----------------------------------------------------------------------
    async def prepare(self, graph: Graph, options: JobOptions | None) -> tuple[Graph, Hold]:
        """The graph with each model URL replaced by its file (downloaded first), and a hold on
        every downloaded model it names, to release when the job's task ends."""
        return await prepare(self, graph, options)

    # -- downloads ---------------------------------------------------------------------------
    def start(self, spec: Spec, credentials: Credentials, where: str) -> Download:
        """Join the download of the same file, or start one."""
        running = self.flights.get(spec.flight)
        if running is not None:
            return running
        if spec.filename and f"{spec.folder}/{spec.filename}" in self.writing:
            raise Conflict(
                f"{where}: another download is writing {spec.folder}/{spec.filename}",
                location=where,
            )
        download = Download(uuid.uuid4().hex[:12], spec, where)
        self.flights[spec.flight] = download
        self.downloads[download.id] = download
        while len(self.downloads) > KEEP_FINISHED:
            oldest = next(iter(self.downloads.values()))
            if not oldest.finished:
                break
            self.downloads.popitem(last=False)
        task = asyncio.create_task(self._run(download, credentials), name=f"model-{download.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return download

    async def _run(self, download: Download, credentials: Credentials) -> None:
        try:
            await self._land(download, credentials)
        except GatewayError as e:
            log.warning("download %s failed: %s", download.id, e.message)
            download.failed(e)
        except asyncio.CancelledError:
            download.failed(ComfyUnavailable("the gateway shut down during the download"))
            raise
        except Exception:
            log.exception("download %s of %s failed", download.id, redact(download.spec.url))
            download.failed(GatewayError("internal error in the download; see the gateway's log"))
        finally:
            self.flights.pop(download.spec.flight, None)

    def _present(self, spec: Spec, where: str) -> tuple[Entry | None, str, int] | None:
        """(entry, name, size) of a file that is already there for this spec, or None."""
        if spec.filename is None:
            entry = self.cache.find(spec.folder, spec.url_key)
            return (entry, entry.filename, entry.bytes) if entry is not None else None
        path = self.cache.path(spec.folder, spec.filename)
        if not path.exists():
            return None
        entry = self.cache.get(spec.folder, spec.filename)
        if entry is not None and spec.sha256 and entry.sha256 != spec.sha256:
            raise Conflict(
                f"{where}: {spec.folder}/{spec.filename} is already there with sha256 "
                f"{entry.sha256}; choose another filename",
                location=where,
            )
        return entry, spec.filename, path.stat().st_size

    def _free_name(self, spec: Spec, name: str) -> str:
        """name, or, where another file has it, name with a piece of the URL's hash."""
        taken = (
            f"{spec.folder}/{name}" in self.writing or self.cache.path(spec.folder, name).exists()
        )
        if spec.filename is not None or not taken:
            return name
        stem, _, extension = name.rpartition(".")
        return f"{stem}-{spec.url_key[:8]}.{extension}"

    async def _land(self, download: Download, credentials: Credentials) -> None:
        spec, where = download.spec, download.where
        present = self._present(spec, where)
        if present is not None:
            entry, name, size = present
            if entry is not None:
                self.cache.touch(entry)
                if spec.pin and not entry.pinned:
                    entry.pinned = True
                    self.cache.save()
            download.landed(entry, name, fetched=False, size=size)
            return
        folder = self.cache.root / spec.folder
        with contextlib.suppress(OSError):  # a folder it cannot make: the download says why
            folder.mkdir(parents=True, exist_ok=True)
        given = spec.filename or name_in(spec.url)
        target = self._free_name(spec, given) if given else None
        temp = folder / f".{target or 'model'}.{download.id}{TEMP_SUFFIX}"
        reservation = Reservation()
        transfer = Transfer(
            spec.url, where, credentials, spec.trusted,
            room=lambda size: self.cache.reserve(reservation, size, folder),
        )  # fmt: skip
        reservation.written = lambda: transfer.have
        download.transfer, download.status = transfer, "downloading"
        claimed = {f"{spec.folder}/{target}"} if target else set()
        self.writing |= claimed
        started, ok, digest = time.monotonic(), False, ""
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
                target = self._free_name(spec, transfer.filename)
            if target is None:
                raise InvalidRequest(
                    f"{where}: {transfer.shown()} gives no file name (none in its path, no "
                    "Content-Disposition): download it with POST /models/download and a filename",
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
            self.cache.release(reservation)
            self.metrics.model_download_ended(transfer.received, ok=ok)
        now = time.time()
        entry = Entry(
            folder=spec.folder, filename=target, bytes=transfer.have, sha256=digest,
            source=redact(spec.url), url_key=spec.url_key, downloaded_at=now, last_used=now,
            pinned=spec.pin,
        )  # fmt: skip
        self.cache.add(entry)
        download.hand_over(entry)
        seconds = time.monotonic() - started
        log.info(
            "downloaded %s (%s in %.1fs, %s/s, resumed %d time(s)) from %s",
            entry.key, size_text(entry.bytes), seconds,
            size_text(entry.bytes / max(seconds, 1e-3)), transfer.resumed, entry.source,
        )  # fmt: skip
        self._announce("model.downloaded", entry, seconds=round(seconds, 3))
        await self.watch.refresh()  # the enums list it before the download says it is done
        if not self.watch.lists(spec.folder, target):
            log.warning(
                "ComfyUI does not list %s: does it search %s? (MODEL_CACHE_DIR)",
                entry.key, self.cache.root,
            )  # fmt: skip
        download.landed(entry, target, fetched=True, size=entry.bytes)

    def _evicted(self, entry: Entry) -> None:
        self.metrics.model_evicted()
        self._announce("model.evicted", entry)
        self.watch.wake()  # the enums lose it

    def _announce(self, event: str, entry: Entry, **more: Any) -> None:
        if self.events is not None:
            data = {"folder": entry.folder, "filename": entry.filename, "bytes": entry.bytes,
                    "sha256": entry.sha256, "source": entry.source, **more}  # fmt: skip
            self.events.announce(event, data)

    def _tick(self) -> None:
        if self.cache.dirty:
            self.cache.save()  # a few KB, in the event loop: no job changes it meanwhile

    async def check_folder(self, folder: str, where: str) -> None:
        """Raise InvalidRequest, located, unless ComfyUI has this model folder."""
        if self._folders is None:
            self._folders = await self.client.model_folders()
        if folder not in self._folders:
            raise InvalidRequest(
                f"{where}: ComfyUI has no model folder {folder!r} (it has "
                f"{', '.join(sorted(self._folders))})",
                location=where,
            )
