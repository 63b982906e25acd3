"""Output files: which count, in which order, prefix rewriting, and the local output folder."""

from __future__ import annotations

import copy
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from app.comfy.client import ComfyClient
from app.comfy.graph import unique_prefixes
from app.jobs.outputs import INLINE_READ_MAX_BYTES, OutputFile, OutputStore, output_files
from app.jobs.spool import Spool


def image(filename: str, folder_type: str | None = "output", subfolder: str = "") -> dict[str, Any]:
    item: dict[str, Any] = {"filename": filename, "subfolder": subfolder}
    if folder_type is not None:
        item["type"] = folder_type
    return item


def names(outputs: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    return [(f.node_id, f.filename) for f in output_files(outputs)]


def test_nodes_sorted_numerically_then_position() -> None:
    outputs = {
        "10": {"images": [image("j.png")]},
        "2": {"images": [image("b1.png"), image("b0.png")]},
        "5:3": {"images": [image("f.png")]},
        "5": {"images": [image("e.png")]},
        "9": {"images": [image("i.png")]},
        "5:10": {"images": [image("g.png")]},
    }
    assert names(outputs) == [
        ("2", "b1.png"),
        ("2", "b0.png"),
        ("5", "e.png"),
        ("5:3", "f.png"),
        ("5:10", "g.png"),
        ("9", "i.png"),
        ("10", "j.png"),
    ]


@pytest.mark.parametrize(
    ("item", "counted"),
    [
        (image("a.png"), True),
        (image("a.png", folder_type=None), True),
        (image("a.png", folder_type="temp"), False),
        (image("a.png", folder_type="input"), False),
        ({"filename": 7, "type": "output"}, False),
        ({"type": "output"}, False),
        ("a.png", False),
        (None, False),
    ],
    ids=["output", "no-type", "temp", "input", "filename-int", "no-filename", "str", "none"],
)
def test_which_items_count(item: Any, counted: bool) -> None:
    assert names({"3": {"images": [item]}}) == ([("3", "a.png")] if counted else [])


@pytest.mark.parametrize("key", ["images", "gifs", "audio", "video", "3d"])
def test_every_list_key_counts(key: str) -> None:
    assert names({"4": {key: [image("x.bin")]}}) == [("4", "x.bin")]


def test_keys_and_order_within_a_node() -> None:
    outputs = {
        "4": {"images": [image("a.png")], "gifs": [image("b.mp4")], "audio": [image("c.flac")]}
    }
    assert names(outputs) == [("4", "a.png"), ("4", "b.mp4"), ("4", "c.flac")]


@pytest.mark.parametrize(
    "value",
    [True, "a.png", {"filename": "a.png", "type": "output"}, 3, None],
    ids=["bool", "str", "dict", "int", "none"],
)
def test_non_list_values_ignored(value: Any) -> None:
    outputs = {"4": {"animated": value, "images": [image("a.png")]}}
    assert names(outputs) == [("4", "a.png")]


def test_output_file_fields() -> None:
    outputs = {"7": {"images": [image("a.png", subfolder="sub"), image("b.png", folder_type=None)]}}
    outputs["7"]["images"][1]["subfolder"] = None
    assert output_files(outputs) == [
        OutputFile("7", "a.png", "sub", "output"),
        OutputFile("7", "b.png", "", "output"),
    ]


GRAPH: dict[str, dict[str, Any]] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "cat"}},
    "3": {"class_type": "PrimitiveString", "inputs": {"value": "dog"}},
    "4": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": ["3", 0]}},
    "5": {"class_type": "SaveAnimatedWEBP", "inputs": {"filename_prefix": ""}, "_meta": {"t": 1}},
    "6": {"class_type": "Note"},
}


def test_unique_prefixes() -> None:
    before = copy.deepcopy(GRAPH)
    rewritten = unique_prefixes(GRAPH, "abc123")
    assert before == GRAPH
    assert rewritten["2"]["inputs"] == {"images": ["1", 0], "filename_prefix": "cat_abc123"}
    assert rewritten["5"]["inputs"]["filename_prefix"] == "_abc123"
    assert rewritten["5"]["_meta"] == {"t": 1}
    assert rewritten["4"] == GRAPH["4"]
    for untouched in ("1", "3", "6"):
        assert rewritten[untouched] == GRAPH[untouched]
    assert list(rewritten) == list(GRAPH)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[OutputStore]:
    # Nothing listens at this address: a local file must be read without asking ComfyUI.
    client = ComfyClient("http://127.0.0.1:9", timeout_s=1)
    (tmp_path / "output").mkdir()
    spool = Spool(tmp_path / "spool")
    yield OutputStore(tmp_path / "output", client, spool)
    await client.aclose()
    await spool.aclose()


@pytest.mark.parametrize(
    ("filename", "subfolder"),
    [
        ("../x", ""),
        ("x", ".."),
        ("x", "../output2"),
        ("../../etc/passwd", "sub"),
        ("/etc/passwd", ""),
    ],
)
def test_local_path_refuses_escapes(store: OutputStore, filename: str, subfolder: str) -> None:
    assert store.local_path(OutputFile("1", filename, subfolder, "output")) is None


@pytest.mark.parametrize(("filename", "subfolder"), [("a.png", ""), ("a.png", "sub/deeper")])
def test_local_path_inside(store: OutputStore, filename: str, subfolder: str) -> None:
    path = store.local_path(OutputFile("1", filename, subfolder, "output"))
    assert path is not None
    assert Path(path) == store.output_dir / subfolder / filename


async def test_a_large_file_is_moved_into_the_spool_never_read(store: OutputStore) -> None:
    content = os.urandom(INLINE_READ_MAX_BYTES + 12345)
    (store.output_dir / "big.bin").write_bytes(content)
    taken = await store.take(OutputFile("1", "big.bin", "", "output"))
    assert taken.name == "big.bin" and taken.size == len(content) and taken.data is None
    assert taken.path is not None and taken.path.parent == store.spool.root
    assert not (store.output_dir / "big.bin").exists()  # moved: ComfyUI's folder keeps none
    assert b"".join(taken.iter_chunks()) == content
    assert b"".join([piece async for piece in taken.chunks()]) == content
    spooled = taken.path
    del taken
    assert not spooled.exists()  # nothing refers to it any more: removed


async def test_with_keep_outputs_the_spool_gets_a_link_and_comfyuis_copy_stays(
    store: OutputStore,
) -> None:
    content = os.urandom(INLINE_READ_MAX_BYTES + 1)
    (store.output_dir / "kept.bin").write_bytes(content)
    kept = OutputStore(store.output_dir, store.client, store.spool, keep=True)
    taken = await kept.take(OutputFile("1", "kept.bin", "", "output"))
    assert (store.output_dir / "kept.bin").read_bytes() == content == taken.read()


async def test_take_and_remove(store: OutputStore) -> None:
    content = bytes(range(256)) * 3
    (store.output_dir / "sub").mkdir()
    (store.output_dir / "sub" / "a.png").write_bytes(content)
    (store.output_dir / "b.png").write_bytes(b"second")
    files = [OutputFile("1", "a.png", "sub", "output"), OutputFile("2", "b.png", "", "output")]
    taken = [await store.take(f) for f in files]
    assert [f.name for f in taken] == ["a.png", "b.png"]
    assert [f.data for f in taken] == [content, b"second"]  # small ones: in memory
    store.remove([*files, OutputFile("3", "gone.png", "", "output")])
    assert not (store.output_dir / "sub" / "a.png").exists()
    assert not (store.output_dir / "b.png").exists()
    assert (store.output_dir / "sub").is_dir()


def test_remove_leaves_files_outside(store: OutputStore) -> None:
    outside = store.output_dir.parent / "keep.txt"
    outside.write_text("not ours")
    store.remove([OutputFile("1", "../keep.txt", "", "output")])
    assert outside.read_text() == "not ours"
