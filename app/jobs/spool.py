"""The spool: where a finished job's output files wait on disk until every answer that carries
them has gone out.

The Finisher moves each output out of ComfyUI's output folder into a folder of this process's
own (a rename on the same filesystem, else a streamed copy), so that answers stream it from
disk instead of holding it in memory, and ComfyUI's folder (which /comfy/view serves) never
keeps one tenant's output for another to read. A spooled file is removed when the last thing
that refers to it lets go: the job's record leaving the history, the result cache dropping it,
the last response that sends it ending (`Spooled`, the keeper of app.core.outcome.ResultFile).
The folder is this process's alone (a fresh one per start, removed at a clean stop), and the
process holds a lock on it while it lives: a gateway that starts removes the folders whose
owner is gone (killed, or out of memory), so a crash loop never fills the disk with outputs.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import time
import uuid
import weakref
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "comfy-gateway-spool-"
LOCK = ".lock"  # held (flock) by the process whose spool it is, released when it dies
# A folder younger than this is never swept: its owner may not have locked it yet.
SWEEP_MIN_AGE_S = 60.0


class Spooled:
    """Owns one spooled file: it is removed when the last reference to this goes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        weakref.finalize(self, _remove, path)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class Spool:
    """A folder of this process's own for finished outputs (OUTPUT_SPOOL_DIR, else the
    system's temporary folder)."""

    def __init__(self, parent: Path | None = None) -> None:
        base = parent if parent is not None else Path(tempfile.gettempdir())
        base.mkdir(parents=True, exist_ok=True)
        sweep(base)
        self.root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=base))
        self._lock = os.open(self.root / LOCK, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def place(self, name: str) -> Path:
        """A fresh path in the spool for a file called name (the name kept for its suffix)."""
        return self.root / f"{uuid.uuid4().hex}-{os.path.basename(name)}"

    def new(self, name: str) -> Spooled:
        """A fresh file in the spool, to be written: removed with its last reference."""
        return Spooled(self.place(name))

    def take(self, source: str, name: str, *, keep_source: bool) -> Spooled:
        """Move an output file into the spool (or copy it, when `keep_source` or when the
        spool is on another filesystem): never read into memory."""
        target = self.place(name)
        if keep_source:
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
            return Spooled(target)
        try:
            os.rename(source, target)
        except OSError:  # another filesystem: copied (sendfile, in pieces), then removed
            shutil.copyfile(source, target)
            _remove(Path(source))
        return Spooled(target)

    async def aclose(self) -> None:
        """Remove the spool and whatever is still in it (at the gateway's stop)."""
        shutil.rmtree(self.root, ignore_errors=True)
        os.close(self._lock)


def sweep(parent: Path) -> None:
    """Remove the spool folders in parent whose process is gone (nobody holds their lock)."""
    now = time.time()
    for folder in parent.glob(f"{PREFIX}*"):
        try:
            if not folder.is_dir() or now - folder.stat().st_mtime < SWEEP_MIN_AGE_S:
                continue
            fd = os.open(folder / LOCK, os.O_CREAT | os.O_RDWR, 0o600)
        except OSError:
            continue  # gone meanwhile, or not ours to open
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # its gateway still runs
        finally:
            os.close(fd)
        log.info("removing %s: the gateway that kept outputs there is gone", folder)
        shutil.rmtree(folder, ignore_errors=True)
