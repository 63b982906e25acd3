"""app.core.bounded.BoundedMap: what the gateway remembers for clients stays within its bound,
oldest first out; put and touch make a key the newest, get does not."""

from __future__ import annotations

from app.core.bounded import BoundedMap


def test_the_oldest_entries_go_first_past_the_bound() -> None:
    kept: BoundedMap[str, int] = BoundedMap(2)
    for n, key in enumerate("abc"):
        kept.put(key, n)
    assert list(kept.items()) == [("b", 1), ("c", 2)] and kept.size == 2


def test_put_and_touch_make_a_key_the_newest_and_get_does_not() -> None:
    kept: BoundedMap[str, int] = BoundedMap(3)
    for n, key in enumerate("abc"):
        kept.put(key, n)
    assert kept.get("a") == 0 and list(kept) == ["a", "b", "c"]
    assert kept.touch("a") == 0 and list(kept) == ["b", "c", "a"]
    kept.put("b", 10)  # a new value: the newest now
    assert list(kept.items()) == [("c", 2), ("a", 0), ("b", 10)]
    kept.put("d", 3)
    assert list(kept) == ["a", "b", "d"]
    assert kept.touch("gone") is None and list(reversed(kept)) == ["d", "b", "a"]


def test_entries_weighed_by_size_of() -> None:
    kept: BoundedMap[str, bytes] = BoundedMap(10, size_of=len)
    kept.put("a", b"1234")
    kept.put("b", b"1234")
    kept.put("a", b"12")  # replaced: its old weight goes
    assert kept.size == 6
    kept.put("c", b"123456")  # 12 in all: the oldest goes until 10 or less are left
    assert list(kept) == ["a", "c"] and kept.size == 8
    assert kept.pop("a") == b"12" and kept.size == 6 and kept.pop("a") is None


def test_an_entry_that_may_not_go_stops_the_dropping_until_it_may() -> None:
    busy = {"a"}
    dropped: list[str] = []
    kept: BoundedMap[str, str] = BoundedMap(
        1, evictable=lambda value: value not in busy, on_evict=lambda key, _: dropped.append(key)
    )
    kept.put("a", "a")
    kept.put("b", "b")
    assert list(kept) == ["a", "b"] and dropped == []
    busy.clear()
    kept.put("c", "c")
    assert list(kept) == ["c"] and dropped == ["a", "b"]
    assert kept == {"c": "c"}
