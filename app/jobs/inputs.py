"""Input files: a loader node's value may be a file name, a URL (http(s), s3://, an Azure blob
URL), or base64.

URLs are downloaded (size cap, deadline; each http(s) redirect hop's address checked and pinned
by app.core.addresses; s3:// and blob URLs from the operator's stores: app.media.stores), base64
is decoded, both are sniffed from their bytes and held to the input caps (INPUT_MAX_MB; for an
image its frames and pixels: app.media.caps), handed to ComfyUI through its upload endpoint into
a per-job subfolder, and the graph is rewritten to point at them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from app.comfy.client import ComfyClient
from app.core.addresses import AddressPolicy, AddressRefused, Pinned
from app.core.downloads import without_userinfo
from app.core.errors import InputError
from app.core.metrics import MetricsHooks
from app.core.settings import Settings
from app.media.caps import InputCaps
from app.media.stores import StoreInputs

log = logging.getLogger(__name__)

# class_type -> the inputs that name a file in ComfyUI's input folder, and what they load.
LOADERS: dict[str, dict[str, str]] = {
    "LoadImage": {"image": "image"},
    "LoadImageMask": {"image": "image"},
    "LoadImageOutput": {"image": "image"},
    "LoadVideo": {"file": "video"},
    "VHS_LoadVideo": {"video": "video"},
    "VHS_LoadVideoFFmpeg": {"video": "video"},
    "VHS_LoadAudioUpload": {"audio": "audio"},
    "LoadAudio": {"audio": "audio"},
}
# A loader may take another kind where ComfyUI can decode it (audio from a video's track).
ACCEPTS = {"image": {"image"}, "video": {"video", "image"}, "audio": {"audio", "video"}}
# A name in the input folder has an extension (base64 never has a dot), and may carry ComfyUI's
# folder annotation: "photo.png", "sub/clip.mp4", "out.png [output]".
FILENAME = re.compile(r"^[\w\-. ()\[\]/]{0,250}\.\w{1,8}( \[(input|output|temp)\])?$")
MAX_REDIRECTS = 5


@dataclass(frozen=True)
class Sniffed:
    kind: str  # image, video, audio
    extension: str


def sniff(data: bytes) -> Sniffed | None:
    """What a file is, from its first bytes; None for anything no loader takes."""
    head = data[:64]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Sniffed("image", "png")
    if head.startswith(b"\xff\xd8\xff"):
        return Sniffed("image", "jpg")
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return Sniffed("image", "gif")
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return Sniffed("image", "webp")
    if head.startswith(b"BM"):
        return Sniffed("image", "bmp")
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return Sniffed("image", "tiff")
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return Sniffed("audio", "wav")
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return Sniffed("video", "avi")
    if head.startswith(b"fLaC"):
        return Sniffed("audio", "flac")
    if head.startswith(b"OggS"):
        return Sniffed("audio", "ogg")
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return Sniffed("audio", "mp3")
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"M4A ", b"M4B "):
            return Sniffed("audio", "m4a")
        return Sniffed("video", "mov" if brand == b"qt  " else "mp4")
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return Sniffed("video", "webm" if b"webm" in data[:64] else "mkv")
    return None


@dataclass
class JobInputs:
    """The files one job handed to ComfyUI, to remove when the job ends."""

    subfolder: str
    names: list[str] = field(default_factory=list)


class InputFiles:
    """Turns URLs and base64 in a graph's loader inputs into files in ComfyUI's input folder."""

    def __init__(self, settings: Settings, client: ComfyClient) -> None:
        self.client = client
        self.input_dir = settings.comfy_input_dir
        self.max_bytes = settings.input_max_bytes
        self.caps = InputCaps.from_settings(settings)
        self.timeout_s = settings.input_download_timeout_s
        self.addresses = AddressPolicy.from_settings(settings)
        self.http = httpx.AsyncClient(
            follow_redirects=False, timeout=httpx.Timeout(self.timeout_s, connect=10.0)
        )
        self.stores = StoreInputs(settings, self.http)
        self.metrics = MetricsHooks()
        # Told of each input downloaded from a URL (the gateway's system events).
        self.on_event: Callable[[str, dict[str, Any]], None] | None = None

    async def aclose(self) -> None:
        await self.http.aclose()

    async def prepare(
        self, graph: dict[str, Any], tag: str, client: ComfyClient | None = None
    ) -> tuple[dict[str, Any], JobInputs]:
        """Rewrite the graph's loader inputs; the files go into the subfolder `gw-<tag>`, through
        `client`'s ComfyUI (any instance: they share the input folder)."""
        job = JobInputs(f"gw-{tag}")
        uploader = client or self.client
        fetched: dict[str, str] = {}  # source value -> name given to ComfyUI
        rewritten = dict(graph)
        try:
            for node_id, node in graph.items():
                for input_name, kind in LOADERS.get(node.get("class_type", ""), {}).items():
                    value = node.get("inputs", {}).get(input_name)
                    if not isinstance(value, str):
                        continue  # a link, or missing: ComfyUI's validation speaks to that
                    where = f"prompt.{node_id}.inputs.{input_name}"
                    name = await self._resolve(value, kind, where, job, fetched, uploader)
                    if name != value:
                        inputs = {**rewritten[node_id]["inputs"], input_name: name}
                        rewritten[node_id] = {**rewritten[node_id], "inputs": inputs}
        except BaseException:
            self.remove(job)
            raise
        return rewritten, job

    async def _resolve(
        self,
        value: str,
        kind: str,
        where: str,
        job: JobInputs,
        fetched: dict[str, str],
        client: ComfyClient,
    ) -> str:
        if value in fetched:
            return fetched[value]  # one download for a URL a graph names several times
        scheme = urlsplit(value).scheme.lower() if "://" in value[:12] else ""
        started = time.monotonic()
        if scheme in ("http", "https", "s3"):
            data = await self._download(value, where)
        elif scheme:
            raise InputError(
                f"{where}: only http(s) and s3:// URLs can be fetched, not {scheme}://",
                location=where,
            )
        elif FILENAME.match(value) and not looks_like_path(value):
            return value  # already in ComfyUI's input folder
        else:
            self.caps.check_base64(value, where)
            # Raw base64 may start with "/" (JPEG's is "/9j/"), so a path is only what
            # does not decode to a file.
            data = decode_base64(value, where, strict=False)
            if (not data or sniff(data) is None) and looks_like_path(value):
                raise InputError(
                    f"{where}: a path is not allowed: give a file name in ComfyUI's input "
                    "folder, an http(s) URL, or base64",
                    location=where,
                )
            if not data:
                data = decode_base64(value, where)  # raises, naming what is accepted
        sniffed = sniff(data)
        if sniffed is None or sniffed.kind not in ACCEPTS[kind]:
            found = sniffed.kind if sniffed else "not a file type any loader reads"
            raise InputError(f"{where}: expected {kind}, got {found}", location=where)
        await self.caps.check_off_loop(data, where)  # before ComfyUI, or anything, decodes it
        name = f"{len(job.names) + 1}.{sniffed.extension}"
        stored = await client.upload(data, name, job.subfolder)
        job.names.append(stored)
        fetched[value] = stored
        if scheme and self.on_event is not None:
            self.on_event("file_downloaded", {
                "url": without_userinfo(value), "local_path": str(Path(self.input_dir) / stored),
                "size": len(data), "duration": round(time.monotonic() - started, 3),
            })  # fmt: skip
        return stored

    async def _download(self, url: str, where: str) -> bytes:
        try:
            async with asyncio.timeout(self.timeout_s):
                if self.stores.handles(url):
                    data = await self.stores.read(url, where, lambda: self._too_large(url, where))
                    self.metrics.input_downloaded(len(data))
                    return data
                return await self._follow(url, where)
        except TimeoutError:
            raise InputError(
                f"{where}: downloading {url} took longer than {self.timeout_s:g}s", location=where
            ) from None
        except httpx.HTTPError as e:
            raise InputError(f"{where}: cannot download {url}: {e!r}", location=where) from None

    async def _follow(self, url: str, where: str) -> bytes:
        for _ in range(MAX_REDIRECTS + 1):
            pinned = await self._pin(url, where)
            async with self.http.stream(
                "GET", pinned.url, headers=pinned.headers, extensions=pinned.extensions
            ) as response:
                if response.is_redirect and "location" in response.headers:
                    url = urljoin(url, response.headers["location"])
                    if urlsplit(url).scheme not in ("http", "https"):
                        raise InputError(f"{where}: redirected to a non-http URL", location=where)
                    continue
                if response.status_code != 200:
                    raise InputError(
                        f"{where}: {url} answered HTTP {response.status_code}", location=where
                    )
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self.max_bytes:
                    raise self._too_large(url, where)
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise self._too_large(url, where)
                    chunks.append(chunk)
                self.metrics.input_downloaded(size)
                return b"".join(chunks)
        raise InputError(f"{where}: more than {MAX_REDIRECTS} redirects", location=where)

    def _too_large(self, url: str, where: str) -> InputError:
        mb = self.max_bytes / 2**20
        return InputError(f"{where}: {url} is larger than INPUT_MAX_MB ({mb:g} MB)", location=where)

    async def _pin(self, url: str, where: str) -> Pinned:
        try:
            return await self.addresses.pin(url)
        except AddressRefused as e:
            raise InputError(f"{where}: {e}", location=where) from None

    def remove(self, job: JobInputs) -> None:
        """Delete the job's input files, when ComfyUI's input folder is on this machine."""
        if job.names:
            folder = Path(self.input_dir) / job.subfolder
            with contextlib.suppress(OSError):
                shutil.rmtree(folder)


def looks_like_path(value: str) -> bool:
    return value.startswith(("/", "\\", "~")) or ".." in re.split(r"[/\\]", value)


def decode_base64(value: str, where: str, *, strict: bool = True) -> bytes:
    """Decode base64 with or without a data: prefix; not strict: b"" instead of an error."""
    payload = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
    payload = "".join(payload.split())  # line breaks from some encoders
    try:
        return base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
    except (binascii.Error, ValueError):
        if not strict:
            return b""
        raise InputError(
            f"{where}: not a file name in ComfyUI's input folder, an http(s) URL, or base64",
            location=where,
        ) from None
