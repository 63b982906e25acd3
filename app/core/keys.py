"""API keys as settings hold them: what a valid key looks like, and reading a key file.

The middleware that asks requests for a key is app.edge.auth; this part is shared with the
settings, which check keys at start-up.
"""

from __future__ import annotations

import re
from pathlib import Path

# RFC 6750's b64token: what may follow `Bearer ` unquoted. It leaves out `,` and `#`, which
# separate keys in API_KEYS and start comments in API_KEYS_FILE.
KEY_PATTERN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
MIN_KEY_LENGTH = 16


def key_problem(key: str) -> str | None:
    """Why `key` cannot be an API key, without repeating it; None when it can."""
    if not KEY_PATTERN.fullmatch(key):
        return "has characters other than letters, digits and -._~+/ (and = at the end)"
    if len(key) < MIN_KEY_LENGTH:
        return (
            f"is {len(key)} characters; use at least {MIN_KEY_LENGTH} (e.g. `openssl rand -hex 32`)"
        )
    return None


def split_keys(value: str) -> list[str]:
    """The keys of an API_KEYS value: a comma list, blanks ignored."""
    return [k.strip() for k in value.split(",") if k.strip()]


def parse_key_file(text: str, name: str = "API_KEYS_FILE") -> list[str]:
    """The keys of a key file: one per line; `#` starts a comment; blank lines are ignored.

    Raises ValueError naming the line of a key that is not valid (never the key itself).
    """
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        key = line.split("#", 1)[0].strip()
        if not key:
            continue
        if problem := key_problem(key):
            raise ValueError(f"{name} line {number}: the key {problem}")
        keys.append(key)
    return keys


def read_key_file(path: Path) -> list[str]:
    """The keys in `path`; ValueError if it cannot be read, holds a bad key, or holds none."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ValueError(f"cannot be read: {reason}") from None
    keys = parse_key_file(text)
    if not keys:
        raise ValueError("holds no key (one per line; `#` starts a comment)")
    return keys
