"""ResultCache: the output files of answered requests, by the digest of their canonical body.

A bounded LRU (RESULT_CACHE_MAX_MB), counted in the bytes of the files and their names. It keeps
the outcome's files themselves (app.core.outcome.ResultFile), not copies of their bytes: a file
over 1 MiB lies in the gateway's spool on disk, and the entry holds its keeper, so the spooled
file stays there while the cache holds it and is removed when the entry goes (and nothing else
refers to it). Memory holds only the small files. In a fleet, an answer whose files lie with
another gateway (the one that ran the job) is not kept: they are that gateway's to let go. The
routes consult and fill it (app.routes.respond for POST /prompt with `cache`,
app.compat.v1.routes for /api/v1/prompts); what may be cached at all is app.jobs.cacheable's
call. A hit runs no job: ComfyUI never sees the request.
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
class CachedResult:
    """The output files of one answered request, in the order the answer gave them."""

    files: tuple[ResultFile, ...]  # by reference: a spooled file's keeper comes with it
    warnings: tuple[str, ...] = ()  # the same request's: its convert_output is in the key

    @classmethod
    def of(cls, outcome: JobOutcome) -> CachedResult:
        """A succeeded job's files, as they are (a job whose outputs were uploaded is never
        cached): nothing is read or copied."""
        return cls(outcome.files, outcome.warnings)

    def outcome(self, request_id: str, prompt: dict[str, Any], stats: Stats) -> JobOutcome:
        """The outcome of a request answered from the cache."""
        return JobOutcome(
            id=request_id, prompt=prompt, files=self.files, stats=stats, warnings=self.warnings
        )

    @property
    def size(self) -> int:
        """What the entry counts against the bound: its files' bytes (in memory or on disk;
        and names."""
        files = sum(f.size + len(f.name.encode()) for f in self.files)
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
        """Keep a result, evicting the least recently used; False if it alone is over the bound,
        or if its files lie with another gateway of the fleet."""
        if result.size > self.max_bytes or any(f.remote is not None for f in result.files):
            return False
        self._entries.put(key, result)
        self.metrics.result_cache_size(self.bytes, len(self._entries))
        return True


def _size(result: CachedResult) -> int:
    return result.size
