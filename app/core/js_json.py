"""JSON as JavaScript's `JSON.stringify` writes it, for the bodies webhooks sign.

Node receivers (their Express or Fastify handler, then svix) verify a signature over
`JSON.stringify(JSON.parse(raw))`, not over the raw bytes: a body verifies there only when that
round trip gives the same bytes. So numbers are written as JavaScript writes them (`9`, not
`9.0`; `0.00001`; `1e+21`; `-0` as `0`), strings as UTF-8 with only JSON.stringify's escapes,
and each object's integer-like keys first, ascending, as a JavaScript object orders them.
Integers past 2^53 cannot survive a JavaScript parse; they are written as the number JavaScript
reads (and writes back), so the signature still verifies.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

MAX_SAFE = 2**53
ARRAY_INDEX = re.compile(r"^(0|[1-9][0-9]{0,9})$")
SURROGATE = re.compile("[\ud800-\udfff]")


def js_dumps(value: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    """The bytes `JSON.stringify(value)` would give, compact; ValueError for NaN or Infinity.
    `default`: what to write for a value JSON has no form of (as json.dumps's)."""
    out: list[str] = []
    _write(value, out, default)
    return "".join(out).encode()


def js_number(value: float) -> str:
    """A number as JavaScript's Number.prototype.toString writes it (shortest round trip)."""
    if not math.isfinite(value):
        raise ValueError(f"{value!r} has no JSON form")
    if value == 0:
        return "0"  # -0 too
    sign = "-" if value < 0 else ""
    _, digit_tuple, exponent = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    assert isinstance(exponent, int)
    exponent += len("".join(map(str, digit_tuple))) - len(digits)
    digits = digits.lstrip("0")
    k, n = len(digits), len(digits) + exponent  # value = 0.<digits> x 10^n
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = f"{digits[:n]}.{digits[n:]}"
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        e = n - 1
        mantissa = digits if k == 1 else f"{digits[0]}.{digits[1:]}"
        text = f"{mantissa}e{'+' if e > 0 else '-'}{abs(e)}"
    return sign + text


def js_string(value: str) -> str:
    text = json.dumps(value, ensure_ascii=False)  # escapes only `"`, `\` and controls, as JS
    return SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _key_order(keys: list[str]) -> list[str]:
    indexes = sorted((k for k in keys if ARRAY_INDEX.match(k) and int(k) < 2**32 - 1), key=int)
    chosen = set(indexes)
    return indexes + [k for k in keys if k not in chosen]


def _write(value: Any, out: list[str], default: Callable[[Any], Any] | None) -> None:
    if value is None:
        out.append("null")
    elif value is True or value is False:
        out.append("true" if value else "false")
    elif isinstance(value, int):
        out.append(str(value) if abs(value) <= MAX_SAFE else js_number(float(value)))
    elif isinstance(value, float):
        out.append(js_number(value))
    elif isinstance(value, str):
        out.append(js_string(value))
    elif isinstance(value, dict):
        items = {str(k) if isinstance(k, int) else k: v for k, v in value.items()}
        out.append("{")
        for i, key in enumerate(_key_order(list(items))):
            if not isinstance(key, str):
                raise TypeError(f"keys must be str, not {type(key).__name__}")
            out.append(("," if i else "") + js_string(key) + ":")
            _write(items[key], out, default)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out, default)
        out.append("]")
    elif default is not None:
        _write(default(value), out, None)
    else:
        raise TypeError(f"{type(value).__name__} is not JSON serializable")
