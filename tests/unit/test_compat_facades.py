"""The pure parts of the /api/v1 and /api/v2 facades: Accept, files in a graph, a full disk,
upload placement, which node saved a file (byte ranges: test_file_body)."""

from __future__ import annotations

import json

import pytest

from app.compat.v1.answer import wants_file
from app.compat.v1.request import file_name, inline_files, unwrap
from app.compat.v1.routes import node_failed
from app.compat.v2.assets import PlacementError, placement
from app.compat.v2.jobs import job_error
from app.core.errors import ExecutionFailed, InvalidRequest


@pytest.mark.parametrize(
    ("accept", "media", "file"),
    [
        (None, "image/png", False),
        ("*/*", "image/png", False),  # curl: JSON, as the fork's later code does
        ("image/png", "image/png", True),
        ("image/png", "image/webp", True),  # the fork's clients send image/png for any image
        ("image/png", "video/mp4", False),
        ("video/*", "video/mp4", True),
        ("application/json", "image/png", False),
        ("application/json;q=0.5, image/*", "image/jpeg", True),
        ("image/png;q=0.2, application/json", "image/png", False),
        ("text/html,image/avif,image/webp,*/*;q=0.8", "image/png", False),  # a browser: a tie
        ("image/png;q=0", "image/png", False),
    ],
)
def test_accept_picks_the_file_only_when_the_client_prefers_it(
    accept: str | None, media: str, file: bool
) -> None:
    assert wants_file(accept, media) is file


def test_the_docs_wrapper_is_unwrapped_but_a_node_called_prompt_is_not() -> None:
    graph = {"1": {"class_type": "X", "inputs": {}}}
    assert unwrap({"prompt": graph}) == graph
    node = {"prompt": {"class_type": "X", "inputs": {}}}
    assert unwrap(node) == node


def test_uploaded_files_replace_the_loader_inputs_that_name_them() -> None:
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
        "2": {"class_type": "LoadImageMask", "inputs": {"image": "a.png [input]"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a.png"}},
    }
    done = inline_files(graph, {"a.png": b"\x89PNG"})
    assert done["1"]["inputs"]["image"] == done["2"]["inputs"]["image"] == "iVBORw=="
    assert done["3"] == graph["3"] and graph["1"]["inputs"]["image"] == "a.png"
    with pytest.raises(InvalidRequest, match=r"b\.png"):
        inline_files(graph, {"a.png": b"x", "b.png": b"y"})


@pytest.mark.parametrize("name", ["", "../x.png", "sub/x.png", "a\\b.png", ".."])
def test_a_file_part_needs_a_plain_name(name: str) -> None:
    with pytest.raises(InvalidRequest):
        file_name(name, "files")


@pytest.mark.parametrize(
    ("message", "status"),
    [
        ("[Errno 28] No space left on device: '/out/x.png'", 507),
        ("index 3 is out of bounds", 500),
    ],
)
def test_a_node_that_fails_is_a_500_and_a_full_disk_a_507(message: str, status: int) -> None:
    failed = ExecutionFailed(
        "node 2 failed",
        details={"node_id": "2", "exception_type": "OSError", "exception_message": message},
    )
    answer = node_failed(failed, {"Digest": "SHA256=0"})
    assert answer.status_code == status and answer.headers["digest"] == "SHA256=0"
    body = json.loads(bytes(answer.body))
    assert body["code"] == ("insufficient_storage" if status == 507 else "execution_failed")


@pytest.mark.parametrize(
    ("file_path", "expected"),
    [
        ("photo.png", (False, "photo.png")),
        ("input/sub/photo.png", (False, "sub/photo.png")),
        ("checkpoints/x.safetensors", (True, "checkpoints/x.safetensors")),
        ("models/loras/y.safetensors", (True, "loras/y.safetensors")),
    ],
)
def test_upload_paths_are_placed_as_the_proxy_places_them(
    file_path: str, expected: tuple[bool, str]
) -> None:
    assert placement(file_path) == expected


@pytest.mark.parametrize("file_path", ["", "/abs.png", "\\x.png", "a/../b.png", "bogus/x.png"])
def test_upload_paths_the_proxy_refuses_are_refused(file_path: str) -> None:
    with pytest.raises(PlacementError):
        placement(file_path)


def test_a_node_failure_is_a_node_execution_error_and_others_keep_their_code() -> None:
    failed = {
        "error": "node 2 failed",
        "code": "execution_failed",
        "details": {"node_id": "2", "class_type": "X", "exception_message": "boom"},
    }
    assert job_error(failed) == {
        "code": "node_execution_error",
        "message": "boom",
        "node_id": "2",
        "class_type": "X",
        "traceback": None,
    }
    assert job_error({"error": "too slow", "code": "timeout"})["code"] == "timeout"
