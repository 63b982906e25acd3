"""/comfy/<path>: ComfyUI's own API, passed through unchanged (the websocket: app.compat.comfy_ws).

Existing ComfyUI clients switch to the gateway by changing their base URL and so gain its
supervision, probes, body cap and API keys. Bodies stream both ways (never held whole); the
BodySizeLimit middleware still counts the request body as it streams. The exceptions are
bounded: the bodies of POST /interrupt and /queue, read to decide whether they may go on, those
of the uploads, read to hold their files to the input caps, and ComfyUI's small answers to POST
/prompt and the uploads, read for the prompt id and the file (app.compat.passthrough has the
rules). Prompts sent this way are the client's own: nothing rewrites them, and the gateway's
queue depth counts them because it reads ComfyUI's queue from the status events every socket
receives. With API keys, each is its key's: app.compat.passthrough_reads narrows what a key
reads to its own prompts, they count against its max_jobs (KEY_LIMITS), and an admin key passes
as with COMFY_PASSTHROUGH=full.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from app.compat import comfy_ws
from app.compat import passthrough_reads as reads
from app.compat.comfy_ws import check_running
from app.compat.passthrough import (
    BODY_CHECK_MAX_BYTES,
    Kind,
    Passthrough,
    SubmittedPrompts,
    answered_id,
    authorize,
    endpoint,
)
from app.compat.passthrough_reads import ViewableFiles, view_ref
from app.core.keys import caller_of
from app.core.settings import PassthroughMode
from app.gateway import Gateway
from app.jobs.input_caps import InputCaps

log = logging.getLogger(__name__)

router = APIRouter(tags=["comfyui"])

PREFIX = "/comfy"
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
# RFC 9110 §7.6.1: they describe one connection, not the message, so a proxy never copies them.
HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
        "te", "trailer", "trailers", "transfer-encoding", "upgrade",
    }
)  # fmt: skip
# Not for ComfyUI: the gateway's own keys, the client's Host (httpx sets ComfyUI's), and
# Origin, which ComfyUI compares with its Host and would refuse (403) behind any proxy.
NOT_FORWARDED = HOP_BY_HOP | {"host", "authorization", "x-api-key", "origin"}


def request_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """The client's headers that go on to ComfyUI, repeated ones kept."""
    named = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]
    # Headers the client declared hop-by-hop in `Connection` are dropped too.
    declared = [v for k, v in named if k.lower() == "connection"]
    listed = {token.strip().lower() for value in declared for token in value.split(",")}
    return [(k, v) for k, v in named if k.lower() not in NOT_FORWARDED | listed]


def response_headers(headers: httpx.Headers) -> list[tuple[str, str]]:
    """ComfyUI's response headers that go back to the client, repeated ones kept."""
    return [(k, v) for k, v in headers.multi_items() if k.lower() not in HOP_BY_HOP]


def upstream_target(raw_path: bytes, query: bytes) -> str:
    """The path and query for ComfyUI, still percent-encoded: `/comfy/view?x` -> `/view?x`."""
    path = raw_path.decode("latin-1").removeprefix(PREFIX) or "/"
    return f"{path}?{query.decode('latin-1')}" if query else path


def install(app: FastAPI, mode: PassthroughMode) -> None:
    """Serve the passthrough on `app`, forwarding what `mode` opens."""
    gateway: Gateway = app.state.gateway
    submitted = SubmittedPrompts(foreign=gateway.comfy.is_gateway_prompt)
    app.state.passthrough = Passthrough(mode, submitted, ViewableFiles())
    app.include_router(router)
    app.include_router(comfy_ws.router)


@router.api_route(f"{PREFIX}/{{path:path}}", methods=METHODS, include_in_schema=False)
async def forward(path: str, request: Request) -> Response:
    """A ComfyUI endpoint: the request goes on as it came, the answer comes back as it is."""
    gateway: Gateway = request.app.state.gateway
    passthrough: Passthrough = request.app.state.passthrough
    scope = request.scope
    target = upstream_target(scope.get("raw_path") or scope["path"].encode(), scope["query_string"])
    headers = request_headers(scope["headers"])
    names = {k.lower() for k, _ in headers}
    has_body = "content-length" in names or "transfer-encoding" in {
        k.decode().lower() for k, _ in scope["headers"]
    }
    content: AsyncIterator[bytes] | bytes | None = request.stream() if has_body else None
    caller = caller_of(request.scope)
    owned = passthrough.submitted.of(caller.id)
    found = None
    if passthrough.mode is PassthroughMode.SAFE and not caller.admin:  # admin: as `full`
        found = endpoint(request.method, target.split("?", 1)[0])
        body: bytes | None = b""
        if found.reads_body and has_body:
            body = content = await read_at_most(request.stream(), BODY_CHECK_MAX_BYTES)
        elif found.kind is Kind.UPLOAD and has_body:
            settings = gateway.settings
            caps = InputCaps.from_settings(settings)
            content = await reads.checked_upload(request, caps)
        if isinstance(content, bytes):
            # httpx sets it from the bytes read, so ComfyUI reads exactly what was checked.
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        authorize(found, owned, body, headers)
    check_running(gateway)
    if found is not None and caller.tenant:
        files = passthrough.files
        narrowed = await reads.scoped(found, request, gateway, owned, files, target)
        if narrowed is not None:
            return narrowed
        if found.kind is Kind.SUBMIT:
            await reads.check_quota(gateway, caller, owned)
    upstream = await gateway.comfy.forward(request.method, target, headers, content)
    chunks = relay_body(upstream, target)
    if found is not None and upstream.status_code == 200:
        if found.kind is Kind.SUBMIT:
            chunks = await note_prompt_id(upstream, chunks, passthrough.submitted, caller.id)
        elif found.kind is Kind.UPLOAD and caller.tenant:
            chunks = await note_upload(upstream, chunks, passthrough.files, caller.id)
    response = StreamingResponse(chunks, status_code=upstream.status_code)
    # Set raw so that repeated headers stay repeated, and nothing is added or recomputed.
    response.raw_headers = [
        (k.lower().encode("latin-1"), v.encode("latin-1"))
        for k, v in response_headers(upstream.headers)
    ]
    return response


async def read_at_most(stream: AsyncIterator[bytes], limit: int) -> bytes | None:
    """The whole body, or None once it grows past `limit` bytes (the rest is left unread)."""
    body = bytearray()
    async for chunk in stream:
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def note_prompt_id(
    upstream: httpx.Response,
    chunks: AsyncIterator[bytes],
    submitted: SubmittedPrompts,
    owner: str | None,
) -> AsyncIterator[bytes]:
    """Remember the prompt id in ComfyUI's answer to POST /prompt, as the key's; the answer
    goes on unchanged.

    Read before the answer goes out, so that the client can interrupt its prompt at once.
    """
    answer, size, chunks = await peek_answer(upstream, chunks)
    prompt_id = answered_id(answer)
    if prompt_id is None:
        log.warning("no prompt_id in ComfyUI's %d-byte answer to a passthrough POST /prompt", size)
    else:
        submitted.add(prompt_id, owner)
    return chunks


async def note_upload(
    upstream: httpx.Response, chunks: AsyncIterator[bytes], files: ViewableFiles, owner: str | None
) -> AsyncIterator[bytes]:
    """Remember the file ComfyUI's answer to an upload names as the key's, for its /view."""
    answer, _, chunks = await peek_answer(upstream, chunks)
    if isinstance(answer, dict) and answer.get("name"):
        files.uploaded(owner, view_ref({**answer, "type": answer.get("type") or "input"}))
    return chunks


async def peek_answer(
    upstream: httpx.Response, chunks: AsyncIterator[bytes]
) -> tuple[Any, int, AsyncIterator[bytes]]:
    """ComfyUI's small JSON answer (None past BODY_CHECK_MAX_BYTES or not JSON), its size, and
    the chunks to send on, the ones read included."""
    head: list[bytes] = []
    answer: Any = None
    while (size := sum(map(len, head))) <= BODY_CHECK_MAX_BYTES:
        chunk = await anext(chunks, None)
        if chunk is None:  # all of it, small as the answers read here are
            answer = json_in(upstream.headers, b"".join(head))
            break
        head.append(chunk)

    async def replay() -> AsyncIterator[bytes]:
        for chunk in head:
            yield chunk
        async for chunk in chunks:
            yield chunk

    return answer, size, replay()


def json_in(headers: httpx.Headers, raw: bytes) -> Any:
    # A Response of our own decodes the bytes as they came (gzip, if ComfyUI compressed them).
    try:
        return httpx.Response(200, headers=headers, content=raw).json()
    except (ValueError, httpx.DecodingError):
        return None


async def relay_body(upstream: httpx.Response, target: str) -> AsyncIterator[bytes]:
    """ComfyUI's body as it arrives, bytes unchanged (compressed stays compressed)."""
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    except httpx.TransportError as e:
        # The status line has gone out: all we can do is end the body short, which the
        # client sees as a broken response rather than a complete wrong one.
        log.warning("ComfyUI broke off the answer to %s: %r", target, e)
    finally:
        await upstream.aclose()
