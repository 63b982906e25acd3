"""A request the passthrough forwards, made ready: what goes to ComfyUI, or the answer given here.

COMFY_PASSTHROUGH=true, for every caller but an admin key: the endpoint is decided (rules), the
path and query parsed once (parse), the body read whole within PASSTHROUGH_BODY_TIMEOUT_S before
any connection to ComfyUI is taken (408 past it), what it asks for checked, and what goes on is
rebuilt from what was read: the query re-encoded, a JSON body re-serialized (POST /prompt:
submit), an upload's form rebuilt (upload); a body ComfyUI reads none of (a GET's, a cancel's)
does not go on. A key's narrowed reads are answered here (reads). The modules named are
app.compat.comfy's.

COMFY_PASSTHROUGH=full, and admin keys: the request goes on as it came, its body streamed, which
must arrive within PASSTHROUGH_BODY_TIMEOUT_S all the same.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import Response

from app.compat.comfy import reads
from app.compat.comfy.parse import FileRef, parse_query, path_parts, target, view_file
from app.compat.comfy.rules import BODY_CHECK_MAX_BYTES, Kind, authorize, endpoint
from app.compat.comfy.state import Passthrough
from app.compat.comfy.submit import Submission, submission
from app.compat.comfy.upload import rebuilt_upload
from app.compat.comfy.ws import check_running
from app.core.errors import RequestTimeout
from app.core.keys import Caller
from app.gateway import Gateway
from app.media.caps import InputCaps

PREFIX = b"/comfy"
BODIES = frozenset({Kind.SUBMIT, Kind.INTERRUPT, Kind.QUEUE, Kind.UPLOAD})  # read, then rebuilt
REBUILT = frozenset({"content-length", "content-type", "content-encoding"})
JSON = ("content-type", "application/json")


@dataclass(frozen=True)
class Outgoing:
    """What goes to ComfyUI (or `answer`, given here instead)."""

    target: str  # path and query, percent-encoded
    headers: list[tuple[str, str]]
    content: bytes | AsyncIterator[bytes] | None = None
    answer: Response | None = None
    submission: Submission | None = None  # POST /prompt: its id, let go if ComfyUI refuses


async def checked(
    request: Request,
    headers: list[tuple[str, str]],
    caller: Caller,
    passthrough: Passthrough,
    gateway: Gateway,
    caps: InputCaps,
) -> Outgoing:
    """The request as COMFY_PASSTHROUGH=true forwards it; a 4xx for one it does not."""
    scope = request.scope
    raw_path = (scope.get("raw_path") or scope["path"].encode()).removeprefix(PREFIX) or b"/"
    found = endpoint(request.method, raw_path.decode("latin-1"))
    parts, params = path_parts(raw_path), parse_query(scope["query_string"])
    if found.kind is Kind.VIEW:
        view_file(params)  # a name ComfyUI would read otherwise is a 400 for every caller
    body = await read_body(request, found.kind, gateway.settings.passthrough_body_timeout_s)
    owned = passthrough.submitted.of(caller.id)
    data = authorize(found, owned, body, headers)
    check_running(gateway)
    kept = [(k, v) for k, v in headers if k.lower() not in REBUILT]
    to = target(parts, params)
    if caller.tenant:
        files = passthrough.files
        narrowed = await reads.scoped(found, parts, params, gateway, owned, files, caller.folder)
        if narrowed is not None:
            return Outgoing(to, kept, answer=narrowed)
    if found.kind is Kind.SUBMIT:
        if caller.tenant:
            await reads.check_quota(gateway, caller, owned)
        sent = await submission(body, headers, caller, passthrough, gateway)
        return Outgoing(to, [*kept, JSON], sent.body, submission=sent)
    if found.kind is Kind.UPLOAD:

        async def may_read(ref: FileRef) -> bool:
            if not caller.tenant:
                return True
            return await reads.viewable(gateway, owned, passthrough.files, caller.folder, ref)

        mask = parts[-1] == "mask"
        upload = await rebuilt_upload(request, caps, caller, may_read, mask=mask)
        return Outgoing(to, [*kept, ("content-type", upload.content_type)], upload.body)
    if data is not None:
        return Outgoing(to, [*kept, JSON], json.dumps(data).encode())
    return Outgoing(to, kept)


async def read_body(request: Request, kind: Kind, timeout_s: float) -> bytes | None:
    """The body of a request whose body is read (else b""), whole, within `timeout_s`; None for
    one over BODY_CHECK_MAX_BYTES where that bounds it."""
    if kind not in BODIES:
        return b""
    try:
        async with asyncio.timeout(timeout_s):
            if kind in (Kind.INTERRUPT, Kind.QUEUE):
                return await read_at_most(request.stream(), BODY_CHECK_MAX_BYTES)
            return await request.body()  # Starlette parses an upload's form from these bytes
    except TimeoutError:
        raise too_slow(timeout_s) from None


def as_sent(request: Request, headers: list[tuple[str, str]], timeout_s: float) -> Outgoing:
    """The request as it came (COMFY_PASSTHROUGH=full, admin keys), its body streamed."""
    scope = request.scope
    to = upstream_target(scope.get("raw_path") or scope["path"].encode(), scope["query_string"])
    names = {k.decode("latin-1").lower() for k, _ in scope["headers"]}
    has_body = "content-length" in names or "transfer-encoding" in names
    return Outgoing(to, headers, within(request.stream(), timeout_s) if has_body else None)


def upstream_target(raw_path: bytes, query: bytes) -> str:
    """The path and query as sent, still percent-encoded: `/comfy/view?x` -> `/view?x`."""
    path = raw_path.removeprefix(PREFIX).decode("latin-1") or "/"
    return f"{path}?{query.decode('latin-1')}" if query else path


async def within(stream: AsyncIterator[bytes], timeout_s: float) -> AsyncIterator[bytes]:
    """The body's chunks, as long as the whole arrives within `timeout_s`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                chunk = await anext(stream, None)
        except TimeoutError:
            raise too_slow(timeout_s) from None
        if chunk is None:
            return
        yield chunk


async def read_at_most(stream: AsyncIterator[bytes], limit: int) -> bytes | None:
    """The whole body, or None once it grows past `limit` bytes (the rest is left unread)."""
    body = bytearray()
    async for chunk in stream:
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def too_slow(timeout_s: float) -> RequestTimeout:
    return RequestTimeout(
        f"the request body did not arrive within PASSTHROUGH_BODY_TIMEOUT_S ({timeout_s:g}s)"
    )
