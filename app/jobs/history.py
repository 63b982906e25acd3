"""JobHistory: the job records a lone gateway keeps, running ones always, finished ones up to a
count, an age and a size."""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict

from app.jobs.records import TERMINAL, JobEvent, JobKey, JobRecord


class JobHistory:
    """Records by (owner, request id): running ones always, finished ones up to a count, an age
    and a size (counted over every owner: the memory is the gateway's).

    The finished ones are kept in the order they finished, with their bytes summed as they
    finish, so a look (every request's) drops the oldest in steps, not in a scan of them all."""

    def __init__(self, *, max_finished: int, ttl_s: float, max_bytes: int = 1 << 62) -> None:
        self.max_finished = max_finished
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes  # kept results past this are dropped, oldest first
        self._records: dict[JobKey, JobRecord] = {}
        self._finished: OrderedDict[JobKey, JobRecord] = OrderedDict()  # oldest end first
        self._finished_bytes = 0

    def add(self, record: JobRecord) -> None:
        self._forget(record.key)  # a reused id replaces the finished record
        self._records[record.key] = record
        if record.finished_at is not None:
            self._ended(record)
        else:
            record.listeners.append(self._on_event)
        self.prune()

    def _on_event(self, event: JobEvent, record: JobRecord) -> None:
        if event.type in TERMINAL and self._records.get(record.key) is record:
            self._ended(record)

    def _ended(self, record: JobRecord) -> None:
        self._finished[record.key] = record
        self._finished_bytes += record.result_bytes

    def _forget(self, key: JobKey) -> None:
        self._records.pop(key, None)
        if (finished := self._finished.pop(key, None)) is not None:
            self._finished_bytes -= finished.result_bytes

    def get(self, key: JobKey) -> JobRecord | None:
        self.prune()
        return self._records.get(key)

    def with_id(self, request_id: str) -> list[JobRecord]:
        """Every owner's job with this id (what an admin key may mean by it)."""
        self.prune()
        return [r for (_, rid), r in self._records.items() if rid == request_id]

    def finished(self, limit: int) -> list[JobRecord]:
        """The last finished records (at most limit), newest first, every owner's."""
        self.prune()
        return list(itertools.islice(reversed(self._finished.values()), max(limit, 0)))

    def prune(self) -> None:
        now = time.monotonic()
        newest = next(reversed(self._finished), None)
        while self._finished:
            key, record = next(iter(self._finished.items()))
            assert record.finished_at is not None
            # The newest is kept whatever its size: a job's result is readable once it ends.
            too_big = self._finished_bytes > self.max_bytes and key != newest
            too_many = len(self._finished) > self.max_finished
            if not (too_many or too_big or now - record.finished_at > self.ttl_s):
                return  # the rest finished later
            self._forget(key)
