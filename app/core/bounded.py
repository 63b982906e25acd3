"""BoundedMap: a mapping that keeps at most so much, dropping its oldest entries first.

What the gateway remembers in memory for clients (results, answered digests, ids, assets,
downloads) is bounded so that no client can grow it without end. Order is insertion order:
`put` makes a key the newest (replacing its value), `touch` makes a key the newest without
changing it (least recently used, where reads count as use), and `get` leaves the order alone.

By default each entry counts 1 against `max_size`; `size_of` weighs entries otherwise (the
result cache counts bytes). An entry that is not `evictable` (a download still in flight)
stops the dropping until it is; `on_evict` hears of each entry dropped.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def _one(_: object) -> int:
    return 1


class BoundedMap(Mapping[K, V]):
    """At most `max_size` in all (entries, or what `size_of` weighs), oldest dropped first."""

    def __init__(
        self,
        max_size: int,
        *,
        size_of: Callable[[V], int] = _one,
        evictable: Callable[[V], bool] | None = None,
        on_evict: Callable[[K, V], None] | None = None,
    ) -> None:
        self.max_size = max_size
        self.size = 0  # what the entries weigh together
        self._size_of = size_of
        self._evictable = evictable
        self._on_evict = on_evict
        self._entries: OrderedDict[K, V] = OrderedDict()

    def __getitem__(self, key: K) -> V:
        return self._entries[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __reversed__(self) -> Iterator[K]:
        return reversed(self._entries)

    def put(self, key: K, value: V) -> None:
        """Keep value under key, as the newest entry; then drop the oldest while over the bound."""
        self.pop(key)
        self._entries[key] = value
        self.size += self._size_of(value)
        while self.size > self.max_size and self._entries:
            oldest, dropped = next(iter(self._entries.items()))
            if self._evictable is not None and not self._evictable(dropped):
                break
            del self._entries[oldest]
            self.size -= self._size_of(dropped)
            if self._on_evict is not None:
                self._on_evict(oldest, dropped)

    def touch(self, key: K) -> V | None:
        """The value under key, now the newest entry; None when there is none."""
        if key not in self._entries:
            return None
        self._entries.move_to_end(key)
        return self._entries[key]

    def pop(self, key: K) -> V | None:
        """Forget key; its value, or None when there was none."""
        if key not in self._entries:
            return None
        value = self._entries.pop(key)
        self.size -= self._size_of(value)
        return value
