"""What the /comfy passthrough forwards by default (COMFY_PASSTHROUGH=true).

With COMFY_PASSTHROUGH=true (the default) a client can run its own prompts and nothing that acts
on the whole server or on work it did not submit: submit a prompt, read the queue, history, node
and model lists, view and upload files, follow the websocket, and interrupt, delete or cancel
prompts submitted through the passthrough. Everything else (clearing the queue, a global
interrupt, freeing memory, user data, settings, the rest of ComfyUI's and custom nodes' routes)
is refused with 403 Forbidden; COMFY_PASSTHROUGH=full forwards it all.

With API keys each prompt is its key's: a key acts only on its own prompts, and reads only
them (app.compat.comfy.reads scopes the queue, the history, the jobs API and /view; another
key's prompt is a 404, as an unknown one). Admin keys pass as with COMFY_PASSTHROUGH=full.

A path is read as ComfyUI's aiohttp routes it, so that what is checked is what runs: split on
`/` as sent, then each segment percent-decoded (`%2F` stays inside its segment), case kept.
Empty and dot segments match nothing. ComfyUI serves every route under `/api` too, so leading
`api` segments are dropped first. A body that decides (POST /interrupt, /queue) is read as
aiohttp's `request.json()` reads it; one that it might read otherwise (compressed, another
charset) or that is over BODY_CHECK_MAX_BYTES is refused.

Every request it forwards (for every caller but an admin key) is parsed once and goes on in its
parsed form, re-encoded: app.compat.comfy.parse (path, query, file names), submit (POST /prompt,
whose prompt id and client id become the key's: owners) and upload (the uploads, into the key's
own folder). The passthrough's memory of those ids is app.compat.comfy.state.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from app.compat.comfy.parse import path_parts
from app.core import strict_json
from app.core.errors import Forbidden, InvalidRequest

# Enough to name hundreds of prompts; a body that decides must be read whole before it goes on.
BODY_CHECK_MAX_BYTES = 64 * 1024
OPENS_ALL = "COMFY_PASSTHROUGH=full"


class Kind(Enum):
    OPEN = "open"  # forwarded as it is
    SUBMIT = "submit"  # POST /prompt: its prompt_id and client_id are held for the key
    INTERRUPT = "interrupt"  # only with the prompt_id of a passthrough prompt
    QUEUE = "queue"  # only {"delete": [passthrough prompts]}
    CANCEL = "cancel"  # the jobs API: only a passthrough prompt's id in the path
    UPLOAD = "upload"  # held to the input caps; with keys, into the key's own folder
    # With API keys, what a key reads is scoped to its own prompts (else: as OPEN).
    QUEUE_LIST = "queue list"  # GET /queue
    HISTORY = "history"  # GET /history
    JOBS = "jobs"  # GET /jobs (ComfyUI 0.33+)
    ONE = "one"  # GET /history/{id}, /jobs/{id}: the key's own prompt, else 404
    VIEW = "view"  # GET /view: the files of the key's own prompts and uploads, else 404
    NODES = "nodes"  # GET /object_info: its lists of input files without other keys' folders


READ = frozenset({"GET", "HEAD"})  # aiohttp answers HEAD on every GET route
POST = frozenset({"POST"})
ANY = "*"  # one path segment, whatever it holds
RULES: tuple[tuple[frozenset[str], tuple[str, ...], Kind], ...] = (
    (POST, ("prompt",), Kind.SUBMIT),
    (READ, ("prompt",), Kind.OPEN),
    (READ, ("queue",), Kind.QUEUE_LIST),
    (READ, ("history",), Kind.HISTORY),
    (READ, ("history", ANY), Kind.ONE),
    (READ, ("view",), Kind.VIEW),
    (POST, ("upload", "image"), Kind.UPLOAD),
    (POST, ("upload", "mask"), Kind.UPLOAD),
    (READ, ("object_info",), Kind.NODES),
    (READ, ("object_info", ANY), Kind.NODES),
    (READ, ("system_stats",), Kind.OPEN),
    (READ, ("models",), Kind.OPEN),
    (READ, ("models", ANY), Kind.OPEN),
    (READ, ("embeddings",), Kind.OPEN),
    (READ, ("extensions",), Kind.OPEN),
    (READ, ("features",), Kind.OPEN),
    (READ, ("ws",), Kind.OPEN),
    (READ, ("jobs",), Kind.JOBS),  # the jobs API (ComfyUI 0.33+) lives under /api only
    (READ, ("jobs", ANY), Kind.ONE),
    (POST, ("interrupt",), Kind.INTERRUPT),
    (POST, ("queue",), Kind.QUEUE),
    (POST, ("jobs", ANY, "cancel"), Kind.CANCEL),
)


@dataclass(frozen=True)
class Endpoint:
    """Where a request goes in ComfyUI, and what it needs to be forwarded."""

    name: str  # for messages: the method and the path as sent, e.g. `POST /queue`
    kind: Kind
    path_id: str | None = None  # CANCEL, ONE: the prompt id in the path, decoded

    @property
    def reads_body(self) -> bool:
        return self.kind in (Kind.INTERRUPT, Kind.QUEUE)


def segments(path: str) -> tuple[str, ...] | None:
    """The path as aiohttp matches it, leading `api` segments dropped; None: it matches nothing
    (a 400 where its escapes are not UTF-8)."""
    if not path.startswith("/"):
        return None
    parts = list(path_parts(path.encode("latin-1")))
    if any(part in ("", ".", "..") for part in parts):
        return None
    while parts and parts[0] == "api":
        del parts[0]
    return tuple(parts)


def refusal(what: str, location: str | None = None) -> Forbidden:
    return Forbidden(
        f"{what}; by default the passthrough forwards only what a client needs to run its own "
        f"prompts, and {OPENS_ALL} forwards every ComfyUI endpoint",
        location=location,
    )


def endpoint(method: str, path: str) -> Endpoint:
    """The endpoint `method path` (ComfyUI's path, still percent-encoded) reaches if it is open."""
    name = f"{method} {path}"
    parts = segments(path)
    for methods, pattern, kind in RULES:
        if parts is not None and method in methods and matches(pattern, parts):
            return Endpoint(name, kind, parts[1] if kind in (Kind.CANCEL, Kind.ONE) else None)
    raise refusal(f"{name} is not forwarded")


def matches(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    return len(pattern) == len(parts) and all(
        want in (ANY, part) for want, part in zip(pattern, parts, strict=True)
    )


class Unreadable(ValueError):
    """The body may not be what ComfyUI reads, so what it asks for cannot be checked."""


def read_json(body: bytes | None, headers: Iterable[tuple[str, str]]) -> Any:
    """The body as aiohttp's `request.json()` reads it; Unreadable where it might read otherwise.

    None is a body over BODY_CHECK_MAX_BYTES.
    """
    if body is None:
        raise Unreadable(f"it is over {BODY_CHECK_MAX_BYTES // 1024} KiB")
    for name, value in headers:
        if name.lower() == "content-encoding" and value.strip().lower() not in ("", "identity"):
            raise Unreadable("it is compressed")  # aiohttp would decompress it first
        if name.lower() == "content-type":
            for param in value.split(";")[1:]:
                key, _, given = param.partition("=")
                if key.strip().lower() == "charset" and given.strip(' "').lower() != "utf-8":
                    raise Unreadable("its charset is not UTF-8")
    try:
        # UTF-8 only, as aiohttp reads it (json.loads(bytes) would also take a BOM or UTF-16).
        return strict_json.loads(body)
    except InvalidRequest:
        raise Unreadable("it is not UTF-8 JSON") from None


def authorize(
    found: Endpoint,
    owned: Container[str],
    body: bytes | None = b"",
    headers: Iterable[tuple[str, str]] = (),
) -> Any:
    """Raise Forbidden unless the request acts only on prompts in `owned`; the body as read
    (None where the endpoint reads none), to go on re-encoded."""
    if found.kind is Kind.CANCEL:
        if not owns(owned, found.path_id):
            raise refusal(f"{found.name}: {not_ours(found.path_id)}")
        return None
    if not found.reads_body:
        return None
    try:
        data = read_json(body, headers)
    except Unreadable as e:
        raise refusal(f"{found.name}: its body cannot be checked ({e})") from None
    if not isinstance(data, dict):
        raise refusal(f"{found.name}: its body must be a JSON object")
    if found.kind is Kind.INTERRUPT:
        prompt_id = data.get("prompt_id")
        if not prompt_id:  # ComfyUI then interrupts whatever runs
            raise refusal(f"{found.name} without a prompt_id interrupts whatever runs", "prompt_id")
        if not owns(owned, prompt_id):
            raise refusal(f"{found.name}: {not_ours(prompt_id)}", "prompt_id")
        return data
    # POST /queue, read as ComfyUI does: a truthy `clear`, then each id in `delete`.
    if data.get("clear"):
        raise refusal(f"{found.name} with clear drops every queued prompt", "clear")
    if "delete" in data:
        ids = data["delete"]
        if not isinstance(ids, list):  # ComfyUI would iterate a string's characters
            raise refusal(f"{found.name}: delete must be a list of prompt ids", "delete")
        for prompt_id in ids:
            if not owns(owned, prompt_id):
                raise refusal(f"{found.name}: {not_ours(prompt_id)}", "delete")
    return data


def owns(owned: Container[str], prompt_id: object) -> bool:
    # A JSON list or object is no prompt id, and unhashable besides.
    return isinstance(prompt_id, str) and prompt_id in owned


def not_ours(prompt_id: object) -> str:
    shown = repr(prompt_id)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return f"prompt {shown} was not submitted through the passthrough"


def decide(
    method: str,
    path: str,
    owned: Container[str],
    body: bytes | None = b"",
    headers: Iterable[tuple[str, str]] = (),
) -> Endpoint:
    """The endpoint, if COMFY_PASSTHROUGH=true forwards this request; else Forbidden."""
    found = endpoint(method, path)
    authorize(found, owned, body, headers)
    return found
