"""The model cache: which files in MODEL_CACHE_DIR the gateway downloaded, when each was last
used, which jobs hold them, and deleting the least recently used to make room.

The index (`.comfy-gateway-models.json` in MODEL_CACHE_DIR) lists what the gateway downloaded;
every other file there is the operator's and is neither counted nor ever deleted. A model a
queued or running job holds is never deleted, nor is one pinned (the manifest's, or downloaded
with `pin`). Room is taken for a download's bytes as they arrive (before each piece is written),
against MODEL_CACHE_MAX_GB and the disk's free space, counting what other downloads in flight
have taken: a size the source declares only refuses a download early that could never fit, and
never evicts anything, so a server that announces gigabytes and trickles bytes costs the cache
no more than the bytes it sends.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

from app.core.downloads import CachedModel, ModelCacheState
from app.core.errors import InsufficientStorage
from app.core.keys import ANONYMOUS, Caller

log = logging.getLogger(__name__)

INDEX_NAME = ".comfy-gateway-models.json"
TEMP_SUFFIX = ".gw-part"  # `.<filename>.<download id>.gw-part`, beside where the file will go
# Never fill the disk to its last byte: ComfyUI writes its outputs and temp files there too.
DISK_HEADROOM = 256 * 2**20


@dataclass
class Entry:
    """One downloaded model file."""

    folder: str
    filename: str
    bytes: int
    sha256: str
    source: str  # the URL without user info or query
    url_key: str  # sha256 of the URL as requested: how a later request finds it
    downloaded_at: float
    last_used: float
    pinned: bool = False
    owner: str | None = None  # the id of the key whose request downloaded it (None: no keys)
    auth_required: bool = False  # fetched with a client's own credentials (app.models.proof)

    @property
    def key(self) -> str:
        return f"{self.folder}/{self.filename}"


@dataclass(eq=False)
class Reservation:
    """Room taken by one download in flight (its bytes that arrived); `written` says how much
    of it is on disk."""

    size: int = 0
    written: Callable[[], int] = lambda: 0


class Hold:
    """The downloaded models one job uses; released once, when the job's task ends (the job
    runner releases it)."""

    def __init__(self, cache: ModelCache | None, keys: list[str]) -> None:
        self._cache = cache
        self.keys = keys

    def add(self, key: str) -> None:
        """Hold one more file (one that landed while the job waited)."""
        if self._cache is not None:
            self._cache.holds[key] += 1
            self.keys.append(key)

    def release(self) -> None:
        if self._cache is not None:
            self._cache.holds.subtract(self.keys)
            self._cache = None


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def size_text(n_bytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:.0f} {unit}" if unit == "bytes" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    raise AssertionError("unreachable")


class ModelCache:
    """The downloaded models of one MODEL_CACHE_DIR (one gateway process per folder)."""

    def __init__(
        self, root: Path, max_bytes: int | None, on_evicted: Callable[[Entry], None]
    ) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.on_evicted = on_evicted
        self.entries: dict[str, Entry] = {}
        self.holds: Counter[str] = Counter()
        self.reservations: set[Reservation] = set()
        self.dirty = False
        self._load()

    # -- the index on disk ---------------------------------------------------------------------
    def _load(self) -> None:
        index = self.root / INDEX_NAME
        try:
            saved = json.loads(index.read_text()) if index.exists() else {}
        except (OSError, ValueError) as e:
            log.warning("model cache index %s cannot be read (%s): starting a new one", index, e)
            saved = {}
        known = {f.name for f in fields(Entry)}
        for raw in saved.get("models", []):
            entry = Entry(**{k: v for k, v in raw.items() if k in known})
            path = self.path(entry.folder, entry.filename)
            # Gone, or replaced by hand: no longer the gateway's to count or delete.
            with contextlib.suppress(OSError):
                if path.stat().st_size == entry.bytes:
                    self.entries[entry.key] = entry
        for stale in self.root.glob(f"*/.*{TEMP_SUFFIX}"):  # a download cut by a crash
            log.info("removing the unfinished download %s", stale)
            stale.unlink(missing_ok=True)
        if len(self.entries) != len(saved.get("models", [])):
            self.save()

    def save(self) -> None:
        """Write the index (atomically: a crash leaves the old one or the new one)."""
        self.root.mkdir(parents=True, exist_ok=True)
        temp = self.root / f"{INDEX_NAME}.tmp"
        models = [asdict(entry) for entry in self.entries.values()]
        temp.write_text(json.dumps({"version": 1, "models": models}, indent=1))
        os.replace(temp, self.root / INDEX_NAME)
        self.dirty = False

    # -- what is there -------------------------------------------------------------------------
    def path(self, folder: str, filename: str) -> Path:
        return self.root / folder / filename

    def get(self, folder: str, filename: str) -> Entry | None:
        return self.entries.get(f"{folder}/{filename}")

    def find(self, folder: str, url_key: str) -> Entry | None:
        """The file a URL was downloaded to in this folder, if it is still there."""
        for entry in self.entries.values():
            if entry.folder == folder and entry.url_key == url_key:
                if self.path(entry.folder, entry.filename).exists():
                    return entry
                self._forget(entry)  # deleted by hand
                return None
        return None

    def touch(self, entry: Entry) -> None:
        entry.last_used = time.time()
        self.dirty = True  # saved with the next change, or by the watch loop

    def add(self, entry: Entry) -> None:
        self.entries[entry.key] = entry
        self.save()

    def hold(self, keys: list[str]) -> Hold:
        self.holds.update(keys)
        return Hold(self, keys)

    def _forget(self, entry: Entry) -> None:
        self.entries.pop(entry.key, None)
        self.save()

    @property
    def used_bytes(self) -> int:
        """What the evictable downloads take: pinned ones count as the operator's."""
        return sum(e.bytes for e in self.entries.values() if not e.pinned)

    # -- room ----------------------------------------------------------------------------------
    def fits(self, reservation: Reservation, size: int, folder: Path) -> None:
        """A size a source declares: raise InsufficientStorage when even evicting every model
        that may go would not make room for it. Evicts nothing: a declared size is a claim,
        and room is taken only as bytes arrive (reserve)."""
        self._room(reservation, size, folder, evict=False)

    def reserve(self, reservation: Reservation, size: int, folder: Path) -> None:
        """Grow a download's room to `size` bytes (what has arrived), evicting the least
        recently used models no job holds; or, when even all of those would not do, evict
        nothing and raise InsufficientStorage saying what is in the way."""
        self._room(reservation, size, folder, evict=True)

    def _room(self, reservation: Reservation, size: int, folder: Path, *, evict: bool) -> None:
        more = size - reservation.size
        if more <= 0:
            return
        over_cap = 0
        cap = f"MODEL_CACHE_MAX_GB ({size_text(self.max_bytes or 0)})"
        if self.max_bytes is not None:
            if size > self.max_bytes:
                raise InsufficientStorage(f"the model ({size_text(size)}) is larger than {cap}")
            over_cap = self.used_bytes + self._promised() + more - self.max_bytes
        free = self._free(folder)
        over_disk = more + DISK_HEADROOM + self._pending() - free
        victims, freed = [], 0
        if max(over_cap, over_disk) > 0:
            for entry in self._evictable():
                if freed >= max(over_cap, over_disk):
                    break
                victims.append(entry)
                freed += entry.bytes
        if freed < over_cap:
            raise InsufficientStorage(
                f"no room under {cap}: it holds {size_text(self.used_bytes)} of downloaded "
                f"models, {size_text(self.used_bytes - freed)} of them in use by queued or "
                f"running jobs, {size_text(self._promised())} more are on their way, and this "
                f"one needs {size_text(size)}"
            )
        if freed < over_disk:
            raise InsufficientStorage(
                f"no room on the disk of {folder}: {size_text(free)} free, "
                f"{size_text(self._pending() + more)} needed and {size_text(DISK_HEADROOM)} kept "
                "free; the models left there are in use or the operator's"
            )
        if not evict:
            return
        for entry in victims:
            self._evict(entry)
        reservation.size = size
        self.reservations.add(reservation)

    def release(self, reservation: Reservation) -> None:
        self.reservations.discard(reservation)

    def _promised(self) -> int:
        return sum(r.size for r in self.reservations)

    def _pending(self) -> int:
        """Bytes promised to downloads that have not reached the disk yet."""
        return sum(max(r.size - r.written(), 0) for r in self.reservations)

    def _free(self, folder: Path) -> int:
        folder.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(folder).free

    def _evictable(self) -> list[Entry]:
        """Downloaded models no job holds and no one pinned, least recently used first."""
        free = [e for e in self.entries.values() if not e.pinned and self.holds[e.key] <= 0]
        return sorted(free, key=lambda e: e.last_used)

    def _evict(self, victim: Entry) -> None:
        self.path(victim.folder, victim.filename).unlink(missing_ok=True)
        self._forget(victim)
        log.info(
            "evicted %s (%s, last used %s) to make room",
            victim.key, size_text(victim.bytes), iso(victim.last_used),
        )  # fmt: skip
        self.on_evicted(victim)

    def state(self, caller: Caller = ANONYMOUS) -> ModelCacheState:
        """What GET /models/cache shows: every model (each key may use any by name), but where
        it came from only to the key that downloaded it (an admin: every source)."""
        ordered = sorted(self.entries.values(), key=lambda e: e.last_used)
        return ModelCacheState(
            dir=str(self.root),
            max_bytes=self.max_bytes,
            used_bytes=self.used_bytes,
            models=[
                CachedModel(
                    folder=e.folder,
                    filename=e.filename,
                    bytes=e.bytes,
                    source=e.source if caller.sees(e.owner) else None,
                    sha256=e.sha256,
                    downloaded_at=iso(e.downloaded_at),
                    last_used=iso(e.last_used),
                    in_use=max(self.holds[e.key], 0),
                    pinned=e.pinned,
                )
                for e in ordered
            ],
        )
