"""Output files: find them in a prompt's outputs, take them into the outcome, remove them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.comfy.client import ComfyClient
from app.comfy.graph import node_order
from app.core.options import ConvertSpec
from app.core.outcome import INLINE_READ_MAX_BYTES, ResultFile, content_type_of
from app.jobs.spool import Spool, Spooled
from app.media.convert import convert, converted_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputFile:
    """One file an output node reported, in ComfyUI's own terms."""

    node_id: str
    filename: str
    subfolder: str
    folder_type: str


def output_files(outputs: dict[str, dict[str, Any]]) -> list[OutputFile]:
    """Every saved file (type `output`, not temp previews), ordered by node id, then position."""
    files = []
    for node_id in sorted(outputs, key=node_order):
        for items in outputs[node_id].values():
            if not isinstance(items, list):
                continue
            for item in items:
                if (
                    isinstance(item, dict)
                    and isinstance(item.get("filename"), str)
                    and item.get("type", "output") == "output"
                ):
                    files.append(
                        OutputFile(node_id, item["filename"], item.get("subfolder") or "", "output")
                    )
    return files


class OutputStore:
    """Reads output files from ComfyUI's output folder when it is local, else through /view,
    and hands each on as a ResultFile: a small one in memory, a larger one moved into the
    spool (app.jobs.spool), never read whole."""

    def __init__(
        self, output_dir: Path, client: ComfyClient, spool: Spool, *, keep: bool = False
    ) -> None:
        self.output_dir = output_dir.resolve()
        self._inside = str(self.output_dir) + os.sep
        self.client = client
        self.spool = spool
        self.keep = keep  # KEEP_OUTPUTS: leave ComfyUI's copy where it is

    def local_path(self, file: OutputFile) -> str | None:
        """Where the file lies in the output folder, or None for a name that escapes it."""
        # Lexical, like ComfyUI's own check: resolve() costs a syscall per path component.
        path = os.path.normpath(os.path.join(self._inside, file.subfolder, file.filename))
        return path if path.startswith(self._inside) else None

    async def take(self, file: OutputFile, convert_to: ConvertSpec | None = None) -> ResultFile:
        """The file as the outcome holds it, re-encoded first when asked and an image (a
        conversion holds the file and one decoded image in memory)."""
        path = self.local_path(file)
        size = _size(path) if path is not None else None
        if path is None or size is None:
            return await self._fetch(file, convert_to)
        if (converted := await self._converted(file, path, convert_to)) is not None:
            return converted
        if size <= INLINE_READ_MAX_BYTES:
            return ResultFile.of_bytes(file.filename, _read(path), file.node_id)
        spooled = await asyncio.to_thread(
            self.spool.take, path, file.filename, keep_source=self.keep
        )
        return _on_disk(file.filename, size, file.node_id, spooled)

    async def _fetch(self, file: OutputFile, convert_to: ConvertSpec | None) -> ResultFile:
        """A file ComfyUI serves from elsewhere: streamed from its /view into the spool."""
        spooled = self.spool.new(file.filename)
        size = await self.client.view_into(
            file.filename, file.subfolder, file.folder_type, spooled.path
        )
        if (converted := await self._converted(file, str(spooled.path), convert_to)) is not None:
            return converted
        return _on_disk(file.filename, size, file.node_id, spooled)

    async def _converted(
        self, file: OutputFile, path: str, convert_to: ConvertSpec | None
    ) -> ResultFile | None:
        """The file re-encoded as asked; None when not asked, or not an image Pillow reads."""
        if convert_to is None or not content_type_of(file.filename).startswith("image/"):
            return None
        data = await asyncio.to_thread(_read, path)
        converted = await asyncio.to_thread(convert, data, convert_to)
        del data  # not held while the result is spooled
        if converted is None:
            return None
        name = converted_name(file.filename, convert_to)
        if len(converted) <= INLINE_READ_MAX_BYTES:
            return ResultFile.of_bytes(name, converted, file.node_id)
        spooled = self.spool.new(name)
        await asyncio.to_thread(spooled.path.write_bytes, converted)
        return _on_disk(name, len(converted), file.node_id, spooled)

    def remove(self, files: list[OutputFile]) -> None:
        for file in files:
            path = self.local_path(file)
            if path is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)


def _on_disk(name: str, size: int, node: str, spooled: Spooled) -> ResultFile:
    return ResultFile(name, size, node, path=spooled.path, keeper=spooled)


def _size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except (FileNotFoundError, NotADirectoryError):
        return None


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
