"""Odd input is a located 4xx (or, where the protocol says so, ignored), never a 500: the
headers, path parts and queries the gateway reads by hand, node ids, and odd numbers and strings
in graphs, from every place that builds one."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from app.comfy.events import PromptWaiter, running_node
from app.comfy.graph import check_graph, node_order
from app.compat.a1111.generations import Txt2ImgRequest
from app.compat.a1111.terms import LoraTag
from app.compat.file_body import ByteRange, byte_range
from app.compat.v1.answer import accept_ranges, wants_file
from app.compat.v2.submission import output_id_parts
from app.core.errors import InvalidRequest
from app.edge.body_limit import BodySizeLimit
from app.jobs.webhooks import _retry_after
from app.routes.prompt import resume_point

ODD_DIGITS = ["²", "³³", "\u0663", "1" * 5000, "9" * 19, "-1", "+3", "1_0", "0x10", "", " "]


@pytest.mark.parametrize("value", ODD_DIGITS, ids=range(len(ODD_DIGITS)))
def test_an_odd_last_event_id_is_a_located_400(value: str) -> None:
    record = SimpleNamespace(last_event_id=3, finished=False)
    if not value.strip():
        assert resume_point(value, record) == 0  # type: ignore[arg-type]  # none: from the start
        return
    with pytest.raises(InvalidRequest) as refused:
        resume_point(value, record)  # type: ignore[arg-type]
    assert refused.value.location == "Last-Event-ID"


def test_a_last_event_id_in_ascii_digits_is_read() -> None:
    record = SimpleNamespace(last_event_id=12, finished=False)
    assert resume_point(" 012 ", record) == 12  # type: ignore[arg-type]


@pytest.mark.parametrize("index", ["²", "\u0663", "1" * 5000, "", "-1"])
def test_an_odd_output_index_is_no_output(index: str) -> None:
    assert output_id_parts(f"job-1.{index}") is None
    assert output_id_parts("job-1.2") == ("job-1", 2)


@pytest.mark.parametrize(
    "header",
    ["bytes=²-", "bytes=\u0663-\u0665", "bytes=" + "1" * 5000 + "-", "bytes=-" + "9" * 5000],
)
def test_an_odd_range_is_ignored(header: str) -> None:
    # RFC 9110 §14.2: a Range the server does not understand is ignored (the whole file).
    assert byte_range(header, 10) is None  # the whole file
    assert byte_range("bytes=2-4", 10) == ByteRange(2, 4, 10)


async def test_a_content_length_past_int_is_a_413() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the body must not reach the app")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/prompt",
        "headers": [(b"content-length", b"9" * 5000)],
    }
    await BodySizeLimit(app, max_bytes=1024)(scope, receive, send)
    assert sent[0]["status"] == 413


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("nan", None), ("NaN", None), ("inf", None), ("1e999", None), ("x", None),
     ("9" * 5000, None), ("-3", 0.0), ("2.5", 2.5), ("7", 7.0)],
)  # fmt: skip
def test_a_webhook_receivers_retry_after_is_a_finite_wait(
    header: str, seconds: float | None
) -> None:
    response = httpx.Response(503, headers={"retry-after": header})
    assert _retry_after(response) == seconds


@pytest.mark.parametrize("q", ["nan", "inf", "1e999", "-1", "x", "7"])
def test_an_odd_accept_q_is_a_weight_from_0_to_1(q: str) -> None:
    ((_, weight),) = accept_ranges(f"image/png;q={q}")
    assert 0 <= weight <= 1
    assert not wants_file(f"image/png;q={q}, application/json", "image/png")


@pytest.mark.parametrize("weight", ["nan", "inf", "-inf", "1e999", "NaN:0.5", "te=nan"])
def test_a_lora_weight_that_is_no_number_is_refused(weight: str) -> None:
    with pytest.raises(ValueError, match="not a number"):
        LoraTag.parse("detail", f":{weight}")


@pytest.mark.parametrize("field", ["cfg_scale", "denoising_strength"])
@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity", "1e999"])
def test_an_a1111_number_that_json_cannot_carry_is_refused(field: str, value: str) -> None:
    with pytest.raises(ValidationError):
        Txt2ImgRequest.model_validate({field: value})


def test_progress_that_is_no_number_counts_as_none() -> None:
    # ComfyUI's events are Python's JSON: NaN and Infinity arrive as floats.
    waiter = PromptWaiter("p", 0, None)  # type: ignore[arg-type]
    waiter.apply("progress", {"value": math.nan, "max": math.inf, "node": "3"})
    assert (waiter.progress.value, waiter.progress.max) == (0, 0)
    state = {"nodes": {"3": {"state": "running", "value": math.nan, "max": 10**400}}}
    step = running_node(state)
    assert step is not None and (step.value, step.max) == (0, 10**400)


def node(**inputs: Any) -> dict[str, Any]:
    return {"class_type": "SaveImage", "inputs": inputs}


ODD_IDS_REFUSED = ["", "\n", "a\x00b", "x\x7f", "\x85", "9" * 129]
ODD_IDS_TAKEN = ["²", "³", "\u0663", "a.b", "5:3", "é", "1" * 128, " ", "x y", "\U0001f680"]


@pytest.mark.parametrize("node_id", ODD_IDS_REFUSED, ids=range(len(ODD_IDS_REFUSED)))
def test_an_odd_node_id_is_a_located_400(node_id: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_graph({node_id: node(filename_prefix="x")})
    assert refused.value.location == "prompt"


@pytest.mark.parametrize("node_id", ODD_IDS_TAKEN, ids=range(len(ODD_IDS_TAKEN)))
def test_node_ids_comfyui_takes_are_taken_and_ordered(node_id: str) -> None:
    check_graph({node_id: node(filename_prefix="x"), "10": node(images=[node_id, 0])})
    ordered = sorted([node_id, "10", "9", "5:3", "5", "x", "1" * 5000, "\u0663"], key=node_order)
    numbered = [i for i in dict.fromkeys(ordered) if i in ("5", "5:3", "9", "10")]
    assert numbered == ["5", "5:3", "9", "10"]


@pytest.mark.parametrize(
    ("value", "words"),
    [(math.nan, "not a number"), (math.inf, "not a number"), (-math.inf, "not a number"),
     ("a\ud800b", "lone surrogate")],
)  # fmt: skip
def test_a_literal_json_cannot_carry_is_a_located_400(value: Any, words: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_graph({"1": {"class_type": "EmptyImage", "inputs": {"width": value}}})
    assert refused.value.location == "prompt.1.inputs.width"
    assert words in refused.value.message


PREFIXES_REFUSED = ["a\x00b", "a\nb", "/tmp/x", "../x", "a/../../x", "..", "x" * 201, "é" * 101]
PREFIXES_TAKEN = ["x", "sub/x", "a..b", ".hidden", "x" * 200, "é" * 100, "~", "", "-"]


@pytest.mark.parametrize("prefix", PREFIXES_REFUSED, ids=range(len(PREFIXES_REFUSED)))
def test_a_save_prefix_comfyui_cannot_save_under_is_a_located_400(prefix: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_graph({"7": node(filename_prefix=prefix)})
    assert refused.value.location == "prompt.7.inputs.filename_prefix"


@pytest.mark.parametrize("prefix", PREFIXES_TAKEN, ids=range(len(PREFIXES_TAKEN)))
def test_save_prefixes_comfyui_saves_under_are_taken(prefix: str) -> None:
    check_graph({"7": node(filename_prefix=prefix)})
