"""The one JSON reader for what clients send: RFC 8259 JSON, and nothing the gateway could not
carry through.

Python's json module takes more than JSON: `NaN`, `Infinity` and `-Infinity`, numbers that
overflow to infinity (`1e400`), lone UTF-16 surrogates (`"\\ud800"`), UTF-16 and UTF-32 bodies,
and nesting deep enough to raise RecursionError. The HTTP client that talks to ComfyUI, the
result cache's canonical form and webhook receivers refuse those later, after a job has taken
its place; so every route that reads JSON reads it here, and what is not strict JSON is a 400
located at `body` (or the field it came in, or the string's path) before anything is taken.

Also refused: integers past Python's int-from-string limit (4300 digits), a byte order mark
(RFC 8259 §8.1: a sender must not add one, and ComfyUI refuses one), bytes that are not UTF-8,
and nesting deeper than MAX_DEPTH. Duplicate object keys are read as Python (and so ComfyUI,
which reads every body with the same json module) reads them: the last one wins.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from itertools import accumulate
from typing import Any

from app.core.errors import InvalidRequest

# serde_json's default: far more than any request needs (a graph's values nest about 4 deep),
# and well below what its readers take: pydantic serializes about 250 levels (a job's answer
# echoes its graph), Python's stack about 900.
MAX_DEPTH = 128
INLINE_MAX_BYTES = 1 << 20  # larger bodies are read in a worker thread, off the event loop
NOT_BRACKET_OR_QUOTE = bytes(set(range(256)) - set(b'[]{}"'))
STEP = [0] * 256  # what each byte does to the depth
STEP[ord("[")] = STEP[ord("{")] = 1
STEP[ord("]")] = STEP[ord("}")] = -1
# \uD800-\uDFFF written as an escape (a raw one is not UTF-8, so it never gets this far).
ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
SURROGATE = re.compile("[\ud800-\udfff]")


class _Refused(Exception):
    """Raised inside the parser's hooks; becomes InvalidRequest."""


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise _Refused(f"{text[:40]} is too large for a double")
    return number


DECODER = json.JSONDecoder(parse_constant=_constant, parse_float=_finite)


def loads(raw: bytes | str, where: str = "body") -> Any:
    """The JSON value in raw; InvalidRequest (400, located at `where`) if it is not strict JSON."""
    if isinstance(raw, str):
        try:
            raw = raw.encode("utf-8")
        except UnicodeEncodeError:
            raise _error(where, "it holds a lone surrogate, which is not Unicode text") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raise _error(where, "it starts with a byte order mark (send UTF-8 without one)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _error(where, f"it is not UTF-8 (byte {e.start})") from None
    if _too_deep(raw):
        raise _error(where, f"arrays and objects nest more than {MAX_DEPTH} deep")
    try:
        value = DECODER.decode(text)
    except _Refused as e:
        raise _error(where, str(e)) from None
    except json.JSONDecodeError as e:
        raise _error(where, f"{e.msg} at line {e.lineno} column {e.colno}") from None
    except ValueError as e:  # an integer past Python's int-from-string limit
        raise _error(where, str(e).split(";")[0]) from None
    if b"\\u" in raw and not _surrogates_paired(text):
        path = _surrogate_path(value, where)
        if path is not None:
            raise InvalidRequest(
                f"{path}: a string holds a lone surrogate (\\ud800-\\udfff without its pair), "
                "which is not Unicode text",
                location=path,
            )
    return value


async def read(raw: bytes | str, where: str = "body") -> Any:
    """loads(), in a worker thread for a large body: the event loop keeps serving meanwhile."""
    if len(raw) <= INLINE_MAX_BYTES:
        return loads(raw, where)
    return await asyncio.to_thread(loads, raw, where)


def _error(where: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"{where}: not strict JSON (RFC 8259): {why}", location=where)


def _too_deep(raw: bytes) -> bool:
    """Whether raw nests past MAX_DEPTH; without recursion, and in passes of C code over the
    body where the body is a graph (a Python loop over its brackets only when it is not)."""
    if len(raw) < 2 * (MAX_DEPTH + 1):
        return False  # too short to hold that many pairs
    if b"\\" in raw and b'\\"' in raw:  # escaped quotes do not end strings
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    kept = raw.translate(None, NOT_BRACKET_OR_QUOTE)
    if kept.count(b"[") + kept.count(b"{") <= MAX_DEPTH:
        return False  # not even that many brackets, in strings or out
    if kept.count(b'""') * 2 == kept.count(b'"'):  # no string holds a bracket
        brackets = kept.translate(None, b'"')
    else:
        brackets = b"".join(kept.split(b'"')[::2])
    left = brackets
    for passes in range(1, 5):  # each takes away one or two levels: []s, then {}s
        left = left.replace(b"[]", b"").replace(b"{}", b"")
        if len(left) // 2 + 2 * passes <= MAX_DEPTH:
            return False
    depth = 0
    for start in range(0, len(brackets), 1 << 16):
        chunk = brackets[start : start + (1 << 16)]
        levels = list(accumulate(map(STEP.__getitem__, chunk), initial=depth))
        if max(levels) > MAX_DEPTH:
            return True
        depth = levels[-1]
    return False


def _surrogates_paired(text: str) -> bool:
    """True when every escaped surrogate in text is half of a pair (a high one, then a low one
    at once); False when one may not be (the parsed strings then decide)."""
    high_end = -1  # where the escape of a high surrogate that awaits its low one ends
    for match in ESCAPED_SURROGATE.finditer(text):
        start = match.start()
        if text[start - 1] == "\\":
            return False  # after an escaped backslash it is no escape: look closer
        if high_end >= 0 and start != high_end:
            return False  # the high one before has no low one
        low = match.group()[3] in "cdefCDEF"
        if low != (start == high_end):
            return False
        high_end = -1 if low else match.end()
    return high_end < 0


def _surrogate_path(value: Any, where: str) -> str | None:
    """The path of the first string (or key) with a lone surrogate in it, or None."""
    stack: list[tuple[str, Any]] = [(where, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str) and SURROGATE.search(item):
            return path
        if isinstance(item, dict):
            if any(SURROGATE.search(key) for key in item):
                return path
            inner = [(f"{path}.{key}", v) for key, v in item.items()]
        elif isinstance(item, list):
            inner = [(f"{path}.{index}", v) for index, v in enumerate(item)]
        else:
            continue
        stack.extend(reversed(inner))  # the first one next: the path of the first found
    return None
