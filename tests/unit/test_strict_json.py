"""The one JSON reader (app.core.strict_json): RFC 8259 JSON in, a located 400 for the rest."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.core.errors import InvalidRequest
from app.core.strict_json import MAX_DEPTH, loads, read

REFUSED = [
    (b'{"cfg": NaN}', "body", "NaN"),
    (b'{"cfg": Infinity}', "body", "Infinity"),
    (b'{"cfg": -Infinity}', "body", "-Infinity"),
    (b'{"cfg": 1e400}', "body", "too large"),
    (b'{"cfg": -1.5E+309}', "body", "too large"),
    (b'{"cfg": ' + b"9" * 400 + b".0}", "body", "too large"),
    (b'{"seed": ' + b"7" * 5000 + b"}", "body", "4300 digits"),
    (b'{"text": "\\ud800"}', "body.text", "lone surrogate"),
    (b'{"text": "\\uDFFF"}', "body.text", "lone surrogate"),
    (b'{"text": "\\ud83d\\ud83d\\ude00"}', "body.text", "lone surrogate"),  # high, then a pair
    (b'{"a": ["\\ud83d", "\\ude00"]}', "body.a.0", "lone surrogate"),  # halves, apart
    (b'{"a": "\\\\\\ud800"}', "body.a", "lone surrogate"),  # an escaped backslash, then one
    (b'{"\\udc00": 1}', "body", "lone surrogate"),  # in a key: located at its object
    (b'{"text": "\xed\xa0\x80"}', "body", "not UTF-8"),  # a surrogate, encoded raw
    (b'{"text": "\xff"}', "body", "not UTF-8"),
    ('{"a": 1}'.encode("utf-16"), "body", "not UTF-8"),
    (b"\xef\xbb\xbf{}", "body", "byte order mark"),
    (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "body", f"more than {MAX_DEPTH} deep"),
    (b"[" * 200_000 + b"]" * 200_000, "body", "deep"),  # would be RecursionError
    (b'{"a": ' * 100_000 + b"1" + b"}" * 100_000, "body", "deep"),
    (b"[" * 200_000, "body", "deep"),  # and never closed
    # Brackets in strings do not count, nor hide real ones.
    (b'["]]]]", ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"]", "body", "deep"),
    (b'["\\"]]]", ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"]", "body", "deep"),
    (b"{not json", "body", "Expecting property name"),
    (b"", "body", "Expecting value"),
]


@pytest.mark.parametrize(("raw", "location", "words"), REFUSED, ids=range(len(REFUSED)))
def test_not_strict_json_is_a_located_400(raw: bytes, location: str, words: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        loads(raw)
    assert refused.value.status == 400
    assert refused.value.location == location
    assert words in refused.value.message


ACCEPTED: list[Any] = [
    {"prompt": {"3": {"class_type": "KSampler", "inputs": {"cfg": 7.5, "seed": 2**64 - 1}}}},
    {"text": "emoji \U0001f680 and \u00e9", "zero": -0.0, "tiny": 5e-324, "big": 1.7e308},
    {"seed": int("9" * 4300)},  # Python's limit, not past it
    {"deep": json.loads("[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1))},  # 128 with {}
    {"brackets in text": "[[[[" * 500, "quote": 'say "[[[[["', "backslash": "C:\\x\\[[["},
    {"many": [[[]] for _ in range(5000)]},  # many brackets, shallow
    ["\\ud800 is text here", "\\\\ud800"],
]


@pytest.mark.parametrize("value", ACCEPTED, ids=range(len(ACCEPTED)))
@pytest.mark.parametrize("ascii_only", [True, False], ids=["escaped", "utf8"])
def test_strict_json_reads_as_json_does(value: Any, ascii_only: bool) -> None:
    raw = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert loads(raw) == json.loads(raw)
    assert loads(raw.decode()) == json.loads(raw)  # a str (a multipart field) too


def test_a_str_with_a_raw_lone_surrogate_is_refused() -> None:
    with pytest.raises(InvalidRequest) as refused:
        loads('{"text": "\ud800"}', "prompt")
    assert refused.value.location == "prompt"


def test_duplicate_keys_read_as_comfyui_reads_them() -> None:
    assert loads(b'{"seed": 1, "seed": 2}') == {"seed": 2}  # the last, as Python's json


async def test_a_large_body_is_read_off_the_event_loop() -> None:
    # Same answers through the worker thread as inline (the size only picks where it runs).
    big = json.dumps({"image": "A" * (2 << 20)}).encode()
    assert (await read(big))["image"] == "A" * (2 << 20)
    with pytest.raises(InvalidRequest):
        await read(big[:-1] + b", NaN]")
