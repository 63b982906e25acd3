"""Canonical JSON and the request digest: one byte string, and one SHA-256, per meaning.

The form is RFC 8785's (JSON Canonicalization Scheme): object keys sorted by their UTF-16 code
units, no whitespace, strings as JSON.stringify writes them (UTF-8, only `"`, `\\` and control
characters escaped), and a fractional or exponent number in ECMAScript's shortest form, so
`1.0` and `1` are one value, as ComfyUI reads them. One deviation: integers are written exactly,
where JCS would round those past 2**53 to a double; ComfyUI's seeds go up to 2**64, and two seeds
must never share a digest. Any JCS library gives the same bytes for graphs whose integers stay
within ±2**53, which is every graph but those with huge seeds.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from app.core.js_json import js_number as number


def canonical_json(value: Any) -> bytes:
    """The canonical UTF-8 bytes of a JSON value; ValueError for what JSON cannot carry."""
    parts: list[str] = []
    _write(value, parts)
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a string holds a lone surrogate: not well-formed Unicode") from None


def digest(value: Any) -> str:
    """SHA-256 of the canonical form, in lowercase hex."""
    return hashlib.sha256(canonical_json(value)).hexdigest()


def _write(value: Any, out: list[str]) -> None:
    if value is None or isinstance(value, bool):
        out.append({None: "null", True: "true", False: "false"}[value])
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(number(value))
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, dict):
        out.append("{")
        for index, key in enumerate(sorted(value, key=_utf16_order)):
            if not isinstance(key, str):
                raise ValueError(f"an object key must be a string, not {key!r}")
            out.append("," if index else "")
            out.append(_string(key))
            out.append(":")
            _write(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            out.append("," if index else "")
            _write(item, out)
        out.append("]")
    else:
        raise ValueError(f"not a JSON value: {type(value).__name__}")


def _utf16_order(key: Any) -> bytes:
    # JCS sorts by UTF-16 code units; Python's str order is by code point, which differs
    # only for characters beyond the BMP against those from U+E000 up.
    return key.encode("utf-16-be", "surrogatepass") if isinstance(key, str) else b""


def _string(text: str) -> str:
    # json.dumps without ensure_ascii escapes exactly what JSON.stringify escapes, the same way
    # (short forms for \b \f \n \r \t, \u00xx in lower case for other control characters).
    return json.dumps(text, ensure_ascii=False)
