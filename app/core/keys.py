"""API keys as settings hold them: what a valid key and a key's name look like, the stable id a
key's jobs are owned by, reading a key file, and the caller a request makes.

An entry is `key` or `name:key`. A name (operator-given, so it may label metrics) says who the
key belongs to; keys with the same name are one tenant (rotate a tenant's key by adding the new
one under the same name, then removing the old). A key's id is its name, or for an unnamed key
`key-` and 12 hex digits of its SHA-256: stable across restarts and processes, never the key.

A key's files in ComfyUI's input folder (its uploads through the passthrough and the Comfy API
v2) go to a folder of its own, `gw-key-` and 16 hex digits of the SHA-256 of its id: stable, the
same on every gateway of a fleet, and no key's name on disk. `gw-` starts every folder the
gateway makes there (a job's input files go to `gw-<job tag>`).

The middleware that asks requests for a key is app.edge.auth; this part is shared with the
settings, which check keys at start-up, and with the layers that scope jobs to their owner.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# RFC 6750's b64token: what may follow `Bearer ` unquoted. It leaves out `,` and `#`, which
# separate keys in API_KEYS and start comments in API_KEYS_FILE, and `:`, which ends a name.
KEY_PATTERN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
MIN_KEY_LENGTH = 16
# A metrics label and a log field: short, and free of anything a format would have to escape.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
UNNAMED_ID = re.compile(r"key-[0-9a-f]{12}")  # what an unnamed key's id looks like
UNNAMED = "unnamed"  # the metrics label of every unnamed key: its id would be an offline oracle
RESERVED_NAMES = (UNNAMED, "none", "default")  # labels of their own; `default` in KEY_LIMITS
SCOPE_KEY = "comfy_gateway.caller"  # where the middleware leaves the Caller in the ASGI scope
GATEWAY_FOLDER_PREFIX = "gw-"  # the folders the gateway makes in ComfyUI's input folder


def key_problem(key: str) -> str | None:
    """Why `key` cannot be an API key, without repeating it; None when it can."""
    if not KEY_PATTERN.fullmatch(key):
        return "has characters other than letters, digits and -._~+/ (and = at the end)"
    if len(key) < MIN_KEY_LENGTH:
        return (
            f"is {len(key)} characters; use at least {MIN_KEY_LENGTH} (e.g. `openssl rand -hex 32`)"
        )
    return None


@dataclass(frozen=True)
class KeyEntry:
    """One accepted key, and the name it was given (None: unnamed)."""

    key: str
    name: str | None = None

    @property
    def id(self) -> str:
        return key_id(self.key, self.name)


def key_id(key: str, name: str | None) -> str:
    """The stable id a key's jobs are owned by: its name, else a short hash of the key."""
    return name if name is not None else "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def split_entry(entry: str) -> KeyEntry:
    """`name:key` or `key`, unchecked (a key has no `:`, so the first one ends a name)."""
    name, colon, key = entry.partition(":")
    return KeyEntry(key, name) if colon else KeyEntry(entry)


def entry_problem(entry: KeyEntry) -> str | None:
    """Why a key entry cannot be used (its key, or its name), without repeating the key."""
    if entry.name is not None:
        if not NAME_PATTERN.fullmatch(entry.name):
            return (
                "has a name other than 1-64 letters, digits and _.- (before the first `:`), "
                "starting with a letter or digit"
            )
        if UNNAMED_ID.fullmatch(entry.name) or entry.name in RESERVED_NAMES:
            return f"has a reserved name ({', '.join(RESERVED_NAMES)}, key-<12 hex digits>)"
    return key_problem(entry.key)


def split_keys(value: str) -> list[str]:
    """The entries of an API_KEYS value: a comma list, blanks ignored."""
    return [k.strip() for k in value.split(",") if k.strip()]


def parse_key_file(text: str, name: str = "API_KEYS_FILE") -> list[KeyEntry]:
    """The keys of a key file: one `key` or `name:key` per line; `#` starts a comment; blank
    lines are ignored.

    Raises ValueError naming the line of a key that is not valid (never the key itself).
    """
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        raw = line.split("#", 1)[0].strip()
        if not raw:
            continue
        entry = split_entry(raw)
        if problem := entry_problem(entry):
            raise ValueError(f"{name} line {number}: the key {problem}")
        keys.append(entry)
    return keys


def read_key_file(path: Path) -> list[KeyEntry]:
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


@dataclass(frozen=True)
class Caller:
    """Who makes a request: the id of its key (None while API keys are off), whether the key
    was named (its id is then its name), and whether it is an admin key (ADMIN_API_KEYS)."""

    id: str | None
    named: bool = False
    admin: bool = False

    def sees(self, owner: str | None) -> bool:
        """Whether a job owned by `owner` is this caller's to see and cancel."""
        return self.admin or owner == self.id

    @property
    def tenant(self) -> bool:
        """A key whose view is scoped to its own work (API keys on, not an admin key)."""
        return self.id is not None and not self.admin

    @property
    def folder(self) -> str | None:
        """The key's own folder in ComfyUI's input folder; None where there is no tenant."""
        return key_folder(self.id) if self.tenant and self.id is not None else None

    @property
    def label(self) -> str:
        """The key as metrics name it: operator-given names only (bounded, not secret)."""
        return owner_label(self.id)


def key_folder(owner: str) -> str:
    """The folder of ComfyUI's input folder that a key's uploads go to."""
    return f"{GATEWAY_FOLDER_PREFIX}key-{hashlib.sha256(owner.encode()).hexdigest()[:16]}"


ANONYMOUS = Caller(None)  # every request while API keys are off: one caller, who sees it all


def owner_label(owner: str | None) -> str:
    """A job owner as metrics and webhooks name it: its key's name, `unnamed`, or `none`."""
    if owner is None:
        return "none"
    return UNNAMED if UNNAMED_ID.fullmatch(owner) else owner


def caller_of(scope: Mapping[str, Any]) -> Caller:
    """The caller the API-key middleware found for this request (ANONYMOUS without keys)."""
    found = scope.get(SCOPE_KEY)
    return found if isinstance(found, Caller) else ANONYMOUS


def set_caller(scope: MutableMapping[str, Any], caller: Caller) -> None:
    scope[SCOPE_KEY] = caller
