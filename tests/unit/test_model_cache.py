"""The model cache on a temporary folder: least recently used first, never a held, pinned or
hand-put model, nothing evicted for a download that would not fit anyway, room taken only as
bytes arrive (never for a size a source declares), and its index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.core.errors import InsufficientStorage
from app.models.cache import INDEX_NAME, Entry, ModelCache, Reservation

KIB = 1024


def cache_with(root: Path, cap: int | None, *specs: tuple[str, int, float, bool]) -> ModelCache:
    """A cache holding downloaded files: (name, size, last used, pinned), in loras/."""
    evicted: list[str] = []
    cache = ModelCache(root, cap, lambda entry: evicted.append(entry.filename))
    cache.evicted = evicted  # type: ignore[attr-defined]
    for name, size, last_used, pinned in specs:
        path = root / "loras" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes(size))
        cache.add(Entry("loras", name, size, "0" * 64, f"https://x.example/{name}", name,
                        last_used, last_used, pinned))  # fmt: skip
    return cache


def test_the_least_recently_used_go_first_and_held_ones_never(tmp_path: Path) -> None:
    cache = cache_with(
        tmp_path, 100 * KIB,
        ("a", 30 * KIB, 1.0, False), ("b", 30 * KIB, 2.0, False), ("c", 30 * KIB, 3.0, False),
    )  # fmt: skip
    (tmp_path / "loras" / "by-hand").write_bytes(bytes(50 * KIB))  # the operator's: not counted
    hold = cache.hold(["loras/a"])
    landed = Reservation()
    cache.reserve(landed, 40 * KIB, tmp_path / "loras")
    assert cache.evicted == ["b"]  # type: ignore[attr-defined]  # a is older, but held
    assert sorted(cache.entries) == ["loras/a", "loras/c"]
    assert not (tmp_path / "loras" / "b").exists()
    assert (tmp_path / "loras" / "by-hand").exists()
    hold.release()
    cache.release(landed)  # its download failed: the room it was promised is free again
    cache.reserve(Reservation(), 70 * KIB, tmp_path / "loras")
    assert cache.evicted == ["b", "a"]  # type: ignore[attr-defined]  # c, newer, stays


def test_nothing_is_evicted_for_a_download_that_would_not_fit_anyway(tmp_path: Path) -> None:
    cache = cache_with(
        tmp_path, 100 * KIB, ("a", 30 * KIB, 1.0, False), ("p", 60 * KIB, 0.5, True),
    )  # fmt: skip
    held = cache.hold(["loras/a"])
    with pytest.raises(InsufficientStorage, match="in use by queued or running jobs"):
        cache.reserve(Reservation(), 80 * KIB, tmp_path / "loras")
    with pytest.raises(InsufficientStorage, match="is larger than MODEL_CACHE_MAX_GB"):
        cache.reserve(Reservation(), 101 * KIB, tmp_path / "loras")
    assert cache.evicted == []  # type: ignore[attr-defined]
    held.release()
    # The pinned one counts for nothing and is never a candidate: 71 fits once a goes.
    cache.reserve(Reservation(), 71 * KIB, tmp_path / "loras")
    assert cache.evicted == ["a"]  # type: ignore[attr-defined]
    assert (tmp_path / "loras" / "p").exists()


def test_downloads_in_flight_count_against_the_cap(tmp_path: Path) -> None:
    cache = cache_with(tmp_path, 100 * KIB)
    first = Reservation()
    cache.reserve(first, 60 * KIB, tmp_path / "loras")
    with pytest.raises(InsufficientStorage, match="on their way"):
        cache.reserve(Reservation(), 50 * KIB, tmp_path / "loras")
    cache.release(first)
    cache.reserve(Reservation(), 50 * KIB, tmp_path / "loras")


def test_a_declared_size_evicts_nothing_and_refuses_only_what_could_never_fit(
    tmp_path: Path,
) -> None:
    cache = cache_with(
        tmp_path, 100 * KIB,
        ("a", 30 * KIB, 1.0, False), ("b", 30 * KIB, 2.0, False), ("c", 30 * KIB, 3.0, False),
    )  # fmt: skip
    claim = Reservation()
    cache.fits(claim, 95 * KIB, tmp_path / "loras")  # fits by evicting all three: a claim only
    assert cache.evicted == []  # type: ignore[attr-defined]
    assert claim.size == 0 and cache.reservations == set()
    assert sorted(p.name for p in (tmp_path / "loras").iterdir()) == ["a", "b", "c"]
    with pytest.raises(InsufficientStorage, match="is larger than MODEL_CACHE_MAX_GB"):
        cache.fits(claim, 101 * KIB, tmp_path / "loras")
    held = cache.hold(["loras/a"])
    with pytest.raises(InsufficientStorage, match="in use by queued or running jobs"):
        cache.fits(claim, 80 * KIB, tmp_path / "loras")  # b and c and 10 KiB free make 70
    held.release()
    assert cache.evicted == []  # type: ignore[attr-defined]


def test_room_grows_with_the_bytes_that_arrive_and_evicts_no_more(tmp_path: Path) -> None:
    """A source that claims 95 KiB and sends some: each eviction is for bytes that came."""
    cache = cache_with(
        tmp_path, 100 * KIB,
        ("a", 30 * KIB, 1.0, False), ("b", 30 * KIB, 2.0, False), ("c", 30 * KIB, 3.0, False),
    )  # fmt: skip
    arriving, folder = Reservation(), tmp_path / "loras"
    cache.fits(arriving, 95 * KIB, folder)
    for have in (1, 4 * KIB, 10 * KIB):  # 10 KiB were free
        cache.reserve(arriving, have, folder)
    assert cache.evicted == []  # type: ignore[attr-defined]
    cache.reserve(arriving, 10 * KIB + 1, folder)
    assert cache.evicted == ["a"]  # type: ignore[attr-defined]  # the oldest, for one byte
    cache.reserve(arriving, 40 * KIB, folder)  # a's room covers up to 40 KiB
    assert cache.evicted == ["a"]  # type: ignore[attr-defined]
    cache.reserve(arriving, 40 * KIB + 1, folder)
    assert cache.evicted == ["a", "b"]  # type: ignore[attr-defined]
    assert arriving.size == 40 * KIB + 1
    cache.release(arriving)  # the source stopped there: c, and the room, are left
    assert sorted(cache.entries) == ["loras/c"] and cache.reservations == set()


def test_the_index_survives_a_restart_without_what_changed_meanwhile(tmp_path: Path) -> None:
    cache_with(
        tmp_path, None,
        ("kept", KIB, 1.0, False), ("gone", KIB, 2.0, False), ("replaced", KIB, 3.0, False),
    )  # fmt: skip
    (tmp_path / "loras" / "gone").unlink()
    (tmp_path / "loras" / "replaced").write_bytes(bytes(2 * KIB))  # now the operator's
    stale = tmp_path / "loras" / ".x.safetensors.abc.gw-part"  # a download a crash cut
    stale.write_bytes(b"half")
    again = ModelCache(tmp_path, None, lambda entry: None)
    assert list(again.entries) == ["loras/kept"]
    assert not stale.exists()
    saved = json.loads((tmp_path / INDEX_NAME).read_text())
    assert [m["filename"] for m in saved["models"]] == ["kept"]


def test_the_bundled_comfyui_searches_the_cache_folder(tmp_path: Path) -> None:
    from app.comfy.command import CommandLine
    from app.core.settings import load_settings

    def search_paths(**settings: Path) -> str:
        command = CommandLine(load_settings(**settings), 0)
        argv = command.argv()
        try:
            if "--extra-model-paths-config" not in argv:
                return ""
            return Path(argv[argv.index("--extra-model-paths-config") + 1]).read_text()
        finally:
            command.clean_up()

    models, cache = tmp_path / "models", tmp_path / "cache"
    assert search_paths() == ""  # downloads go to COMFY_HOME/models: ComfyUI's own
    assert "gateway_cache" not in search_paths(model_dir=models)  # MODEL_DIR is the cache
    both = search_paths(model_dir=models, model_cache_dir=cache)
    assert f"gateway:\n  base_path: {models}\n" in both
    assert f"gateway_cache:\n  base_path: {cache}\n  checkpoints: checkpoints\n" in both
