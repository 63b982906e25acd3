"""Thumbnails: a finished job's first image, small, made when the page asks and kept a while.

Made in a worker thread, a few at a time (a page listing many jobs asks for many at once; the
event loop and the jobs' own threads come first), and kept in a BoundedMap of at most
CACHE_BYTES, so showing the page again costs nothing. An image file over MAX_FILE_BYTES gets
none: it is never read whole (nor decoded) for a glance.
"""

from __future__ import annotations

import asyncio

from app.core.bounded import BoundedMap
from app.core.errors import NotFound
from app.core.outcome import JobOutcome, ResultFile
from app.media.thumbnail import NoThumbnail, thumbnail

CACHE_BYTES = 4 * 2**20  # about 400 thumbnails
AT_ONCE = 2  # thumbnails made at the same time
MAX_FILE_BYTES = 8 * 2**20  # a larger image file is not read into memory for a thumbnail
# (owner, request id, file name, size): a later job of the same id has other files.
ThumbKey = tuple[str | None, str, str, int]


class Thumbnails:
    """Thumbnails of jobs' first images, bounded in memory and in work at once."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self._made: BoundedMap[ThumbKey, bytes] = BoundedMap(max_bytes, size_of=len)
        self._at_once = asyncio.Semaphore(AT_ONCE)

    async def of(self, owner: str | None, request_id: str, outcome: JobOutcome | None) -> bytes:
        """The JPEG thumbnail of the job's first image; NotFound when it has none to show."""
        image = first_image(outcome)
        if image is None:
            raise NotFound(f"the job {request_id!r} has no image output here", location="id")
        if image.size > MAX_FILE_BYTES:
            message = f"{image.name} is {image.size / 2**20:.1f} MiB: too large for a thumbnail"
            raise NotFound(message, location="id")
        key = (owner, request_id, image.name, image.size)
        if (made := self._made.touch(key)) is not None:
            return made
        async with self._at_once:
            try:
                made = await asyncio.to_thread(lambda: thumbnail(image.read()))
            except (NoThumbnail, OSError) as e:
                raise NotFound(f"{image.name} has no thumbnail: {e}", location="id") from None
        self._made.put(key, made)
        return made


def first_image(outcome: JobOutcome | None) -> ResultFile | None:
    """The outcome's first image whose bytes the gateway holds (an uploaded one it does not)."""
    if outcome is None:
        return None
    return next((f for f in outcome.files if f.kind == "image" and not f.stored), None)
