"""The model store: models named by URL land in ComfyUI's model folders before a job needs them.

A file lands under MODEL_CACHE_DIR/<folder>/ by way of a hidden temporary name beside it
(`.<name>.<id>.gw-part`, which ComfyUI does not list), its size and sha256 checked, then an
atomic rename: there is never a half file under a model's name, and a failed or mismatched
download leaves nothing. Everyone asking for the same file at once shares one download.

A download says it is done only once ComfyUI lists the file and the store's watch
(app.models.watch) has told its listeners: the workflow enums already name it then. A model that
lands or goes is a system event (`model.downloaded`, `model.evicted`), told to the callback the
gateway hands in (its system webhook).

Each download is the key's that started it: a key has at most its KEY_LIMITS max_downloads in
flight (joining one in flight is free), and sees only the downloads it asked for (admin keys see
all). Whether a key may download at all is checked where requests come in (app.models.grants).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from app.comfy.client import ComfyClient
from app.comfy.graph import Graph
from app.comfy.model_inputs import model_inputs
from app.core.addresses import AddressPolicy, AddressRefused
from app.core.bounded import BoundedMap
from app.core.download_auth import DownloadAuth
from app.core.downloads import ModelDownloadRequest, redact
from app.core.errors import (
    ComfyUnavailable,
    Conflict,
    Forbidden,
    GatewayError,
    InvalidRequest,
    NotFound,
    TooManyDownloads,
)
from app.core.keys import Caller
from app.core.metrics import MetricsHooks
from app.core.options import JobOptions
from app.core.settings import Settings
from app.models.cache import Entry, Hold, ModelCache
from app.models.credentials import Credentials
from app.models.downloads import Download, Spec
from app.models.fetch import Fetcher
from app.models.grants import Grants
from app.models.land import Lander
from app.models.refs import Ref, hold_named, url_refs, where_of, with_files
from app.models.watch import ModelWatch

log = logging.getLogger(__name__)

KEEP_FINISHED = 200  # downloads GET /models/downloads still shows after they ended
DOWNLOAD_RETRY_S = 30  # when a download ends is unknown; about what a small model takes

# Told a system event: its kind and its data (the gateway's SystemEvents.announce).
OnEvent = Callable[[str, dict[str, Any]], None]


class ModelStore:
    """Downloads, the cache they go to, and what jobs hold; one per gateway process."""

    def __init__(
        self,
        settings: Settings,
        client: ComfyClient,
        addresses: AddressPolicy,
        on_event: OnEvent | None = None,
        grants: Grants | None = None,
        metrics: MetricsHooks | None = None,
    ) -> None:
        cap = settings.model_cache_max_gb
        self.cache = ModelCache(
            settings.model_cache_path, int(cap * 2**30) if cap else None, self._evicted
        )
        self.fetcher = Fetcher(
            addresses,
            timeout_s=settings.model_download_timeout_s,
            retries=settings.model_download_retries,
            min_bytes_per_s=settings.model_download_min_kib_per_s * 1024,
            max_s=settings.model_download_max_s,
        )
        self.grants = grants or Grants(settings)
        self.addresses = addresses
        self.credentials = Credentials.from_settings(settings)
        self.enabled = settings.model_downloads
        self.client = client
        self.on_event = on_event
        self.metrics = metrics or MetricsHooks()
        self.watch = ModelWatch(client, self._tick)
        self.lander = Lander(self.cache, self.fetcher, self.watch, self.metrics, self._fetched)
        self.flights: dict[tuple[str, str, str | None, str], Download] = {}
        # The oldest finished ones go first; one in flight stays listed until it ends.
        self.downloads: BoundedMap[str, Download] = BoundedMap(
            KEEP_FINISHED, evictable=lambda download: download.finished
        )
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
        self,
        body: ModelDownloadRequest,
        *,
        owner: str | None = None,
        trusted: bool = False,
        where: str = "url",
        client_auth: DownloadAuth | None = None,
    ) -> Download:
        """Start (or join) a download for the key `owner`; a bad folder, bucket or refused
        address raises at once. `trusted`: the operator's (the manifest). `client_auth`:
        comfyui-api's `auth`, for this URL's host."""
        if not self.enabled and not trusted:
            raise Forbidden("model downloads are off on this gateway (MODEL_DOWNLOADS=false)")
        await self.check_folder(body.folder, "folder")
        credentials = self.credentials
        if body.auth is not None:
            credentials = Credentials.for_host_of(body.url, body.auth).before(credentials)
        credentials = Credentials.of_client(None, client_auth, credentials)
        if not trusted:
            await self.grants.check_s3(body.url, credentials, self.addresses, where)
        if not trusted and not body.url.lower().startswith("s3://"):
            try:
                await self.addresses.check(body.url)
            except AddressRefused as e:
                raise InvalidRequest(f"{where}: {e}", location=where) from None
        spec = Spec.of(body.url, body.folder, body.filename, body.sha256, credentials)
        return self.start(replace(spec, pin=body.pin, trusted=trusted), credentials, where, owner)

    def get(self, download_id: str, caller: Caller) -> Download:
        """A download the caller may see; another key's is the same 404 as an unknown id."""
        found = self.downloads.get(download_id)
        if found is None or not found.shown_to(caller):
            raise NotFound(f"this gateway knows no download {download_id!r}", location="id")
        return found

    def shown_to(self, caller: Caller) -> list[Download]:
        """The downloads the caller may see, oldest first."""
        return [d for d in self.downloads.values() if d.shown_to(caller)]

    # -- what jobs ask -----------------------------------------------------------------------
    async def prepare(
        self, graph: Graph, options: JobOptions | None, owner: str | None = None
    ) -> tuple[Graph, Hold]:
        """The graph with each model URL replaced by its file (downloaded first, for the key
        `owner`), and a hold on every downloaded model it names, to release when the job's task
        ends."""
        refs = list(model_inputs(graph))
        if not refs:
            return graph, Hold(None, [])  # most graphs: nothing to do, nothing to hold
        hold = self.cache.hold([])
        try:
            urls = url_refs(refs)
            if urls:
                graph = await self._resolve(graph, urls, options, hold, owner)
            hold_named(self.cache, graph, hold)
        except BaseException:
            hold.release()
            raise
        return graph, hold

    async def _resolve(
        self,
        graph: Graph,
        urls: list[Ref],
        options: JobOptions | None,
        hold: Hold,
        owner: str | None,
    ) -> Graph:
        """Download every model URL of the graph (each once, shared with other jobs naming it)
        and put its file name in its place. Whether the key may download was asked at the door
        (app.models.grants); its buckets are asked again here, where the operator's S3
        credentials are used (in a fleet: on the gateway that runs the job)."""
        if not self.enabled:
            first = where_of(urls[0])
            raise InvalidRequest(
                f"{first}: model downloads are off on this gateway (MODEL_DOWNLOADS=false): name "
                "an installed file",
                location=first,
            )
        # The runner checked the graph's shape and its destinations first: nothing is fetched
        # for a request that would be refused anyway.
        credentials = self.credentials
        if options is not None and options.model_credentials:
            credentials = Credentials.of(options.model_credentials).before(credentials)
        if options is not None:
            credentials = Credentials.of_client(options.credentials, None, credentials)
        started = []
        for ref in urls:
            _, _, folder, url = ref
            where = where_of(ref)
            await self.check_folder(folder, where)
            await self.grants.check_s3(url, credentials, self.addresses, where)
            spec = Spec.of(url, folder, None, None, credentials)
            started.append((self.start(spec, credentials, where, owner), where))
        names = await asyncio.gather(*(d.outcome(where, hold) for d, where in started))
        return with_files(graph, urls, list(names))

    # -- downloads ---------------------------------------------------------------------------
    def start(
        self, spec: Spec, credentials: Credentials, where: str, owner: str | None = None
    ) -> Download:
        """Join the download of the same file, or start one for the key `owner`."""
        running = self.flights.get(spec.flight)
        if running is not None:
            running.askers.add(owner)
            return running
        if spec.filename and f"{spec.folder}/{spec.filename}" in self.lander.writing:
            raise Conflict(
                f"{where}: another download is writing {spec.folder}/{spec.filename}",
                location=where,
            )
        self._check_max_downloads(owner, where)
        download = Download(uuid.uuid4().hex[:12], spec, where, owner, {owner})
        self.flights[spec.flight] = download
        self.downloads.put(download.id, download)
        task = asyncio.create_task(self._run(download, credentials), name=f"model-{download.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return download

    def _check_max_downloads(self, owner: str | None, where: str) -> None:
        """Refuse (429) a new download of a key that has its max_downloads in flight."""
        most = self.grants.max_downloads(self.grants.caller_of(owner))
        if not most:
            return
        have = sum(d.owner == owner for d in self.flights.values())
        if have >= most:
            raise TooManyDownloads(
                f"{where}: this API key has {have} model download(s) in flight, as many as its "
                f"KEY_LIMITS max_downloads ({most}) allows; retry when one has ended",
                location=where,
                details={"limit": "max_downloads", "max_downloads": most},
                headers={"Retry-After": str(DOWNLOAD_RETRY_S)},
            )

    async def _run(self, download: Download, credentials: Credentials) -> None:
        try:
            await self.lander.land(download, credentials)
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

    def _evicted(self, entry: Entry) -> None:
        self.metrics.model_evicted()
        self.announce(entry, "model.evicted", "file_deleted")
        self.watch.wake()  # the enums lose it

    def _fetched(self, entry: Entry, seconds: float) -> None:
        self.announce(entry, "model.downloaded", "file_downloaded", seconds=round(seconds, 3))

    def announce(self, entry: Entry, ours: str, theirs: str, seconds: float | None = None) -> None:
        """System events about one model: ours (`model.*`), and comfyui-api's `storage.file_*`."""
        if self.on_event is None:
            return
        took = {} if seconds is None else {"seconds": seconds}
        self.on_event(ours, {"folder": entry.folder, "filename": entry.filename,
                             "bytes": entry.bytes, "sha256": entry.sha256, "source": entry.source,
                             **took})  # fmt: skip
        path = str(self.cache.path(entry.folder, entry.filename))
        file = {"url": entry.source, "local_path": path, "size": entry.bytes}
        self.on_event(theirs, file if seconds is None else {**file, "duration": seconds})

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
