"""ResultCache: the output files of answered requests, by the digest of their canonical body.

A bounded LRU in this process's memory (RESULT_CACHE_MAX_MB), counted in the bytes of the files
and their names. The routes consult and fill it (app.routes.respond for POST /prompt with
`cache`, app.compat.v1.routes for /api/v1/prompts); what may be cached at all is
app.jobs.cacheable's call. A hit runs no job: ComfyUI never sees the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.core.bounded import BoundedMap
from app.core.metrics import MetricsHooks
from app.core.outcome import JobOutcome, ResultFile
from app.core.schemas import Stats

# What an entry costs besides its bytes (the objects, the key), so that a flood of tiny results
# still counts against the bound.
ENTRY_OVERHEAD_BYTES = 512


@dataclass(frozen=True)
class CachedFile:
    name: str
    data: bytes


@dataclass(frozen=True)
class CachedResult:
    """The output files of one answered request, in the order the answer gave them."""

    files: tuple[CachedFile, ...]
    warnings: tuple[str, ...] = ()  # the same request's: its convert_output is in the key

    @classmethod
    def of(cls, outcome: JobOutcome) -> CachedResult:
        """A succeeded job's files (its bytes: a job whose outputs were uploaded is never
        cached)."""
        return cls(tuple(CachedFile(f.name, f.read()) for f in outcome.files), outcome.warnings)

    def outcome(self, request_id: str, prompt: dict[str, Any], stats: Stats) -> JobOutcome:
        """The outcome of a request answered from the cache."""
        files = tuple(ResultFile.of_bytes(f.name, f.data) for f in self.files)
        return JobOutcome(
            id=request_id, prompt=prompt, files=files, stats=stats, warnings=self.warnings
        )

    @property
    def size(self) -> int:
        files = sum(len(f.data) + len(f.name.encode()) for f in self.files)
        return files + ENTRY_OVERHEAD_BYTES


class ResultCache:
    """Least recently used results, at most max_bytes in all."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: BoundedMap[str, CachedResult] = BoundedMap(max_bytes, size_of=_size)
        self.metrics = MetricsHooks()  # main hands in the gateway's metrics

    @property
    def bytes(self) -> int:
        return self._entries.size

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> CachedResult | None:
        """The result for this digest, now the most recently used; None on a miss."""
        entry = self._entries.touch(key)
        self.metrics.result_cache_lookup("hit" if entry is not None else "miss")
        return entry

    def peek(self, key: str) -> CachedResult | None:
        """The result for this digest, for serving it again (not a lookup the metrics count)."""
        return self._entries.touch(key)

    def bypassed(self) -> None:
        """Count a request that asked for the cache with a graph it may not serve (random...)."""
        self.metrics.result_cache_lookup("bypass")

    def put(self, key: str, result: CachedResult) -> bool:
        """Keep a result, evicting the least recently used; False if it alone is over the bound."""
        if result.size > self.max_bytes:
            return False
        self._entries.put(key, result)
        self.metrics.result_cache_size(self.bytes, len(self._entries))
        return True


def _size(result: CachedResult) -> int:
    return result.size
