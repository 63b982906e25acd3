"""The frames of a TIFF (app.media.frames), and the directory reader a JPEG's MP index shares.

Pillow draws every page of the chain of image file directories (IFDs), each at its own width
and length, until a next pointer of 0 or one it has visited: there is no page limit. ffmpeg
draws one image: the first page, or the SubIFD it points to when that page is a thumbnail.
Pillow takes the first of repeated tags; here the largest counts. A page's directory entries
may not overlap another's: a real TIFF's never do, and overlapping ones would let a small file
make every reader walk millions of entries.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from app.media.frames import Frames, Size, Unreadable, u, worst

# Pillow's six: big- and little-endian TIFF, the two with swapped magic, BigTIFF.
PREFIXES = (b"MM\x00*", b"II*\x00", b"MM*\x00", b"II\x00*", b"MM\x00+", b"II+\x00")
IMAGE_WIDTH, IMAGE_LENGTH, SUB_IFDS = 256, 257, 330
# Pillow's integer types, each with its struct code.
INTEGERS = {1: "B", 3: "H", 4: "L", 6: "b", 8: "h", 9: "l", 13: "L", 16: "Q"}
MAX_SUB_IFD_DEPTH = 8


@dataclass(frozen=True)
class Layout:
    """How a TIFF (or an MP index) writes its numbers: byte order, and whether BigTIFF."""

    order: str  # "<" or ">"
    big: bool

    @staticmethod
    def of(header: bytes) -> Layout:
        if header[:4] not in PREFIXES:
            raise Unreadable("not a TIFF header")
        return Layout("<" if header[:2] == b"II" else ">", header[2] == 0x2B)  # as Pillow

    def first_ifd(self, data: bytes, base: int = 0) -> int:
        return self.uint(data, base + (8 if self.big else 4), 8 if self.big else 4)

    def uint(self, data: bytes, at: int, size: int) -> int:
        return u(data, at, size, "little" if self.order == "<" else "big")


@dataclass
class Directory:
    """One IFD: its entries (tag -> every (type, count, value field) it has), where its entries
    end, and the next IFD's offset (0: none, or the entries ran past the file)."""

    entries: dict[int, list[tuple[int, int, bytes]]]
    end: int
    next: int


def directory(data: bytes, at: int, layout: Layout, wanted: frozenset[int]) -> Directory:
    """The IFD at `at`, keeping the entries of `wanted` tags; a count past the file is cut
    short there, as Pillow stops reading (and follows no next pointer)."""
    count_size, entry_size = (8, 20) if layout.big else (2, 12)
    count = layout.uint(data, at, count_size)
    start = at + count_size
    readable = min(count, max(0, (len(data) - start) // entry_size))
    end = start + readable * entry_size
    form = layout.order + ("HHQ8s" if layout.big else "HHL4s")
    entries: dict[int, list[tuple[int, int, bytes]]] = {}
    for tag, kind, number, value in struct.iter_unpack(form, data[start:end]):
        if tag in wanted:
            entries.setdefault(tag, []).append((kind, number, value))
    pointer = 8 if layout.big else 4
    complete = readable == count and end + pointer <= len(data)
    return Directory(entries, end, layout.uint(data, end, pointer) if complete else 0)


def first_integer(data: bytes, entry: tuple[int, int, bytes], layout: Layout, base: int = 0) -> int:
    """The first value of an integer entry (out of line: at `base` + its offset); Unreadable
    for another type, a value past the end, or a negative one."""
    kind, count, value = entry
    if kind not in INTEGERS or count < 1:
        raise Unreadable(f"a TIFF number of type {kind}")
    size = struct.calcsize("<" + INTEGERS[kind])
    if size * count <= len(value):
        raw = value[:size]
    else:
        offset = base + layout.uint(value, 0, len(value))
        raw = data[offset : offset + size]
        if len(raw) < size:
            raise Unreadable(f"a TIFF value past the end of the file, at byte {offset}")
    (number,) = struct.unpack(layout.order + INTEGERS[kind], raw)
    if number < 0:
        raise Unreadable("a negative TIFF number")
    return int(number)


def _size(data: bytes, ifd: Directory, layout: Layout) -> Size | None:
    """A page's width and length (the largest of repeated tags); None if one is missing."""
    if IMAGE_WIDTH not in ifd.entries or IMAGE_LENGTH not in ifd.entries:
        return None
    width = max(first_integer(data, e, layout) for e in ifd.entries[IMAGE_WIDTH])
    return width, max(first_integer(data, e, layout) for e in ifd.entries[IMAGE_LENGTH])


SIZE_TAGS = frozenset({IMAGE_WIDTH, IMAGE_LENGTH, SUB_IFDS})


def tiff(data: bytes, limit: int) -> Frames:
    layout = Layout.of(data[:4])
    pillow, visited, entry_bytes = Frames(limit), list[int](), 0
    at = layout.first_ifd(data)
    first: Directory | None = None
    while at and not pillow.full:
        visited.append(at)
        ifd = directory(data, at, layout, SIZE_TAGS)
        entry_bytes += ifd.end - at
        if entry_bytes > len(data):
            raise Unreadable("the TIFF's directories overlap")
        size = _size(data, ifd, layout)
        if size is None:
            if first is None:
                raise Unreadable("the TIFF's first page gives no size")
            break  # Pillow fails on this page
        first = first or ifd
        pillow.add(size)
        at = 0 if ifd.next in visited else ifd.next
    if first is None:
        raise Unreadable("the TIFF has no page")
    ffmpeg = Frames(limit)
    ffmpeg.add(_ffmpeg_page(data, first, layout))
    return worst(pillow, ffmpeg)


def _ffmpeg_page(data: bytes, ifd: Directory, layout: Layout) -> Size:
    """The first page, or the first SubIFD down the chain (ffmpeg's choice for a thumbnail
    page): the largest of them counts."""
    sizes, visited = [_size(data, ifd, layout) or (0, 0)], set[int]()
    for _ in range(MAX_SUB_IFD_DEPTH):
        if SUB_IFDS not in ifd.entries:
            break
        at = first_integer(data, ifd.entries[SUB_IFDS][0], layout)
        if at in visited or at >= len(data):
            break
        visited.add(at)
        ifd = directory(data, at, layout, SIZE_TAGS)
        sizes.append(_size(data, ifd, layout) or (0, 0))
    return max(sizes, key=lambda s: s[0] * s[1])
