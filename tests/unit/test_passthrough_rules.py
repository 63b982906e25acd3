"""What COMFY_PASSTHROUGH=true forwards: app.compat.comfy.rules.decide over paths, methods and
bodies."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.compat.comfy.owners import SubmittedPrompts
from app.compat.comfy.reads import without_folders
from app.compat.comfy.rules import BODY_CHECK_MAX_BYTES, Kind, decide, read_json, segments
from app.core.errors import Forbidden
from app.core.keys import key_folder

OURS = "0f9d8c61-6a0e-4c4e-9d54-3a5e3b6c2f10"  # submitted through the passthrough
THEIRS = "7b1e2f33-1c4d-4f0e-8a2b-5d6c7e8f9a01"  # the gateway's, or another client's of ComfyUI
OWNED = {OURS}
JSON = [("content-type", "application/json")]


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


@pytest.mark.parametrize(
    ("method", "path", "kind"),
    [
        ("POST", "/prompt", Kind.SUBMIT),
        ("POST", "/api/prompt", Kind.SUBMIT),
        ("GET", "/prompt", Kind.OPEN),
        # Reading is open (with API keys, narrowed to the key's own prompts); acting is not.
        ("GET", "/queue", Kind.QUEUE_LIST),
        ("GET", "/history", Kind.HISTORY),
        ("GET", f"/history/{THEIRS}", Kind.ONE),
        ("GET", "/api/history/x", Kind.ONE),
        ("GET", "/view", Kind.VIEW),
        ("HEAD", "/view", Kind.VIEW),
        ("POST", "/upload/image", Kind.UPLOAD),
        ("POST", "/api/upload/mask", Kind.UPLOAD),
        ("GET", "/object_info", Kind.NODES),
        ("GET", "/object_info/KSampler", Kind.NODES),
        ("GET", "/object_info/Load%20Image", Kind.NODES),
        ("GET", "/object_info/a%2Fb", Kind.NODES),  # one segment, as aiohttp routes it
        ("GET", "/system_stats", Kind.OPEN),
        ("GET", "/models", Kind.OPEN),
        ("GET", "/models/checkpoints", Kind.OPEN),
        ("GET", "/embeddings", Kind.OPEN),
        ("GET", "/extensions", Kind.OPEN),
        ("GET", "/features", Kind.OPEN),
        ("GET", "/ws", Kind.OPEN),
        ("GET", "/api/jobs", Kind.JOBS),
        ("GET", f"/api/jobs/{THEIRS}", Kind.ONE),
        ("GET", "/api/api/jobs", Kind.JOBS),  # the jobs API is itself under /api
        ("GET", "/%71ueue", Kind.QUEUE_LIST),  # aiohttp decodes each segment before routing
        ("GET", "/%61pi/hist%6Fry", Kind.HISTORY),
        ("POST", f"/api/jobs/{OURS}/cancel", Kind.CANCEL),
        ("POST", f"/api/jobs/{OURS[:4]}%{ord(OURS[4]):02X}{OURS[5:]}/cancel", Kind.CANCEL),
    ],
)
def test_open_without_a_body(method: str, path: str, kind: Kind) -> None:
    assert decide(method, path, OWNED).kind is kind


@pytest.mark.parametrize(
    ("path", "sent"),
    [
        ("/interrupt", {"prompt_id": OURS}),
        ("/api/interrupt", {"prompt_id": OURS, "other": 1}),
        ("/queue", {"delete": [OURS]}),
        ("/api/queue", {"delete": [OURS, OURS]}),
        ("/queue", {"delete": []}),  # nothing happens
        ("/queue", {"clear": False, "delete": [OURS]}),
        ("/%71ueue", {"delete": [OURS]}),
    ],
)
def test_interrupt_and_delete_of_a_passthrough_prompt(path: str, sent: Any) -> None:
    assert decide("POST", path, OWNED, body(sent), JSON).reads_body


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/free"),
        ("POST", "/history"),  # clear or delete history
        ("POST", "/userdata/comfy.settings.json"),
        ("POST", "/api/userdata/a%2Fb.json"),
        ("DELETE", "/userdata/x.json"),
        ("POST", "/userdata/x.json/move/y.json"),
        ("GET", "/userdata"),
        ("GET", "/userdata/x.json"),
        ("GET", "/v2/userdata"),
        ("GET", "/users"),
        ("POST", "/users"),
        ("GET", "/settings"),
        ("POST", "/settings"),
        ("POST", "/settings/Comfy.Locale"),
        ("GET", "/internal/logs"),
        ("GET", "/internal/folder_paths"),
        ("GET", "/view_metadata/checkpoints"),
        ("GET", "/experiment/models"),
        ("GET", "/"),
        ("GET", "/index.html"),
        ("GET", "/extensions/core/app.js"),
        ("GET", "/manager/queue/start"),
        ("GET", "/api/manager/reboot"),
        ("POST", "/api/jobs/cancel"),  # the batch form: not in the default set
        ("PUT", "/prompt"),
        ("DELETE", "/queue"),
        ("POST", "/view"),
        ("POST", "/upload/other"),
        # Paths that aiohttp would not route as the endpoint they resemble.
        ("POST", "/Prompt"),
        ("POST", "/prompt/"),
        ("POST", "//prompt"),
        ("POST", "/./prompt"),
        ("POST", "/x/../prompt"),
        ("POST", "/x/%2E%2E/prompt"),
        ("POST", "/prompt;x"),
        ("POST", "/upload%2Fimage"),  # one segment `upload/image`
        ("POST", "/api%2Fprompt"),
        ("POST", "%2Fprompt"),  # `/comfy%2Fprompt` leaves no leading slash
        ("GET", "/%2571ueue"),  # decoded once only: `%71ueue`
        ("GET", "/api"),
    ],
)
def test_everything_else_is_refused(method: str, path: str) -> None:
    with pytest.raises(Forbidden) as refused:
        decide(method, path, OWNED, b"{}", JSON)
    assert_refusal(refused.value, f"{method} {path}")


@pytest.mark.parametrize(
    ("path", "raw", "location"),
    [
        ("/interrupt", b"", None),  # ComfyUI: no JSON, so a global interrupt
        ("/interrupt", b"not json", None),
        ("/interrupt", body({}), "prompt_id"),
        ("/interrupt", body({"prompt_id": ""}), "prompt_id"),
        ("/interrupt", body({"prompt_id": None}), "prompt_id"),
        ("/interrupt", body({"prompt_id": THEIRS}), "prompt_id"),
        ("/interrupt", body({"prompt_id": [OURS]}), "prompt_id"),
        ("/interrupt", body([OURS]), None),
        # Python's json, as ComfyUI's, keeps the last of repeated keys.
        ("/interrupt", f'{{"prompt_id": "{OURS}", "prompt_id": ""}}'.encode(), "prompt_id"),
        # aiohttp decodes UTF-8 without taking off a BOM, so ComfyUI reads no JSON.
        ("/interrupt", b"\xef\xbb\xbf" + body({"prompt_id": OURS}), None),
        ("/interrupt", body({"prompt_id": OURS}).decode().encode("utf-16"), None),
        ("/api/interrupt", body({"prompt_id": THEIRS}), "prompt_id"),
        ("/%69nterrupt", body({}), "prompt_id"),
        ("/queue", body({"clear": True}), "clear"),
        ("/queue", body({"clear": "no", "delete": [OURS]}), "clear"),  # truthy, as ComfyUI reads
        ("/api/queue", body({"clear": 1}), "clear"),
        ("/queue", body({"delete": [THEIRS]}), "delete"),
        ("/queue", body({"delete": [OURS, THEIRS]}), "delete"),
        ("/queue", body({"delete": OURS}), "delete"),  # ComfyUI would delete per character
        ("/queue", body({"delete": {OURS: 1}}), "delete"),
        ("/queue", body({"delete": [[OURS]]}), "delete"),
        ("/queue", b"", None),
        ("/queue", body(None), None),
    ],
)
def test_acting_on_prompts_not_submitted_here_is_refused(
    path: str, raw: bytes, location: str | None
) -> None:
    with pytest.raises(Forbidden) as refused:
        decide("POST", path, OWNED, raw, JSON)
    assert_refusal(refused.value, f"POST {path}")
    assert refused.value.location == location


@pytest.mark.parametrize(
    "path",
    [
        f"/api/jobs/{THEIRS}/cancel",
        f"/api/jobs/{OURS}x/cancel",
        f"/api/jobs/{OURS}%2F/cancel",
        "/api/jobs/%2E%2E/cancel",
        f"/jobs/{OURS}/cancel/x",
    ],
)
def test_cancel_of_a_prompt_not_submitted_here_is_refused(path: str) -> None:
    with pytest.raises(Forbidden) as refused:
        decide("POST", path, OWNED)
    assert_refusal(refused.value, f"POST {path}")


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ([("Content-Type", "application/json; charset=UTF-8")], True),
        ([("content-type", 'application/json;charset="utf-8"')], True),
        ([("content-type", "text/plain")], True),  # aiohttp's request.json() ignores the type
        ([], True),
        ([("content-encoding", "identity")], True),
        ([("content-type", "application/json; charset=latin-1")], False),
        ([("content-type", "application/json; Charset=utf-16")], False),
        ([("Content-Encoding", "gzip")], False),  # aiohttp would decompress it first
        ([("content-encoding", "br")], False),
    ],
)
def test_the_body_is_read_as_comfyui_reads_it(
    headers: list[tuple[str, str]], allowed: bool
) -> None:
    sent = body({"prompt_id": OURS})
    if allowed:
        assert read_json(sent, headers) == {"prompt_id": OURS}
        decide("POST", "/interrupt", OWNED, sent, headers)
    else:
        with pytest.raises(Forbidden) as refused:
            decide("POST", "/interrupt", OWNED, sent, headers)
        assert "cannot be checked" in refused.value.message


def test_a_body_over_the_cap_is_refused() -> None:
    # The route passes None for a body it stopped reading at BODY_CHECK_MAX_BYTES.
    with pytest.raises(Forbidden) as refused:
        decide("POST", "/queue", OWNED, None, JSON)
    assert f"over {BODY_CHECK_MAX_BYTES // 1024} KiB" in refused.value.message


def assert_refusal(error: Forbidden, name: str) -> None:
    assert error.status == 403
    assert error.code == "forbidden"
    assert name in error.message
    assert "COMFY_PASSTHROUGH=full" in error.message


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        ("/api/api/jobs/x", ("jobs", "x")),
        ("/object_info/Load%20Image", ("object_info", "Load Image")),
        ("/models/a%2Fb", ("models", "a/b")),
        ("/apix/queue", ("apix", "queue")),
        ("/queue/", None),
        ("queue", None),
    ],
)
def test_segments(path: str, parts: tuple[str, ...] | None) -> None:
    assert segments(path) == parts


def test_submitted_prompts_are_bounded_and_exclude_the_gateways_own() -> None:
    gateway_jobs = {"g"}
    submitted = SubmittedPrompts(limit=3, foreign=gateway_jobs.__contains__)
    for prompt_id in ("a", "b", "c", "g"):
        submitted.add(prompt_id)
    assert len(submitted) == 3
    assert "a" not in submitted  # the oldest went
    assert "b" in submitted and "c" in submitted
    # A client may name its prompt after the gateway's job; that gives it no hold on the job.
    assert "g" not in submitted
    gateway_jobs.clear()
    assert "g" in submitted
    submitted.add("b")  # seen again: now the newest
    submitted.add("d")
    assert "b" in submitted and "c" not in submitted
    assert 1 not in submitted and None not in submitted


def test_object_info_lists_no_other_keys_folders() -> None:
    own, theirs = key_folder("alice"), key_folder("bob")
    info = {
        "LoadImage": {"input": {"required": {"image": [["in.png", f"{theirs}/x.png"], {}]}}},
        "LoadImageDataSetFromFolder": {
            "input": {"required": {"folder": ["COMBO", {"options": [own, theirs, "gw-0a1b/"]}]}}
        },
    }
    assert without_folders(info, own) == {
        "LoadImage": {"input": {"required": {"image": [["in.png"], {}]}}},
        "LoadImageDataSetFromFolder": {
            "input": {"required": {"folder": ["COMBO", {"options": [own]}]}}
        },
    }
