"""Output files: find them in a prompt's outputs, read them, remove them."""

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


# Reading a small file inline is ~15x cheaper than a hop to a worker thread; larger ones would
# hold up the event loop.
INLINE_READ_MAX_BYTES = 1 << 20


class OutputStore:
    """Reads output files from ComfyUI's output folder when it is local, else through /view."""

    def __init__(self, output_dir: Path, client: ComfyClient) -> None:
        self.output_dir = output_dir.resolve()
        self._inside = str(self.output_dir) + os.sep
        self.client = client

    def local_path(self, file: OutputFile) -> str | None:
        """Where the file lies in the output folder, or None for a name that escapes it."""
        # Lexical, like ComfyUI's own check: resolve() costs a syscall per path component.
        path = os.path.normpath(os.path.join(self._inside, file.subfolder, file.filename))
        return path if path.startswith(self._inside) else None

    async def read(
        self, file: OutputFile, convert_to: ConvertSpec | None = None
    ) -> tuple[str, bytes]:
        """The file's name and bytes, re-encoded first when asked and an image."""
        path = self.local_path(file)
        size = _size(path) if path is not None else None
        if path is not None and size is not None:
            if size <= INLINE_READ_MAX_BYTES:
                data = _read(path)
            else:
                data = await asyncio.to_thread(_read, path)
        else:
            data = await self.client.view(file.filename, file.subfolder, file.folder_type)
        if convert_to is not None:
            converted = await asyncio.to_thread(convert, data, convert_to)
            if converted is not None:
                return converted_name(file.filename, convert_to), converted
        return file.filename, data

    async def read_all(
        self, files: list[OutputFile], convert_to: ConvertSpec | None = None
    ) -> list[tuple[str, bytes]]:
        """(name, bytes) of each file, in order."""
        return list(await asyncio.gather(*(self.read(f, convert_to) for f in files)))

    def remove(self, files: list[OutputFile]) -> None:
        for file in files:
            path = self.local_path(file)
            if path is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)


def _size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except (FileNotFoundError, NotADirectoryError):
        return None


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
