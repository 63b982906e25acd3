"""Numbers the gateway reads by hand from headers, paths and queries (Last-Event-ID, Range, an
output's index, Retry-After, an Accept header's q, a LoRA tag's weight).

`str.isdigit()` takes `²` and `٣`, which int() refuses or reads; int() refuses 4300 digits and
more; float() takes `nan`, `inf` and `1e999`. So a whole number here is ASCII digits only, at
most MAX_DIGITS of them, and a number is finite: anything else is not one (None), for the caller
to answer as a located 400, or to ignore where the protocol says to.
"""

from __future__ import annotations

import math

MAX_DIGITS = 18  # below 2**63: every count, offset and event id the gateway knows


def whole_number(text: str | bytes, *, max_digits: int = MAX_DIGITS) -> int | None:
    """The non-negative integer `text` spells in ASCII digits, or None."""
    if not 0 < len(text) <= max_digits or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def finite_number(text: str) -> float | None:
    """The finite number `text` spells (as float() reads it: `1.5`, ` 2 `, `1e3`), or None."""
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None
