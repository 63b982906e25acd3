"""An output into Azure Blob Storage at constant memory: a small file in one Put Blob, a large one
in blocks (Put Block, BLOCK_BYTES each, one in memory at a time) that one Put Block List commits.

A block blob's blocks that are never committed (the upload failed half-way) cannot be dropped
sooner than Azure drops them itself, a week later; a later upload of the same blob replaces them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import httpx

from app.core.outcome import ResultFile
from app.media.azure import BlobAccount

BLOCK_BYTES = 4 << 20  # Azure's SDKs' default block size


class BlobRefused(Exception):
    """Azure answered an error status: its error code, and the start of its body for the log."""

    def __init__(self, response: httpx.Response) -> None:
        self.code = response.headers.get("x-ms-error-code") or f"HTTP {response.status_code}"
        self.text = response.text[:500]
        super().__init__(self.code)


async def put_blob(
    http: httpx.AsyncClient,
    account: BlobAccount,
    container: str,
    blob: str,
    file: ResultFile,
    content_type: str,
) -> None:
    """Store `file` as the block blob container/blob; BlobRefused or httpx's errors."""
    url = account.blob_url(container, blob)
    if file.size <= BLOCK_BYTES:
        data = file.data if file.data is not None else await asyncio.to_thread(file.read)
        await _put(http, account, url, data, content_type=content_type, blob_type="BlockBlob")
        return
    ids: list[str] = []
    async with contextlib.aclosing(file.chunks(BLOCK_BYTES)) as pieces:
        async for piece in pieces:
            block_id = base64.b64encode(b"%06d" % len(ids)).decode()  # one length for all
            await _put(http, account, with_query(url, comp="block", blockid=block_id), piece)
            ids.append(block_id)
            del piece  # the next block is read before this one would be let go
    listing = "".join(f"<Latest>{block_id}</Latest>" for block_id in ids)
    body = f'<?xml version="1.0" encoding="utf-8"?><BlockList>{listing}</BlockList>'.encode()
    await _put(
        http,
        account,
        with_query(url, comp="blocklist"),
        body,
        content_type="application/xml",
        blob_content_type=content_type,  # the blob's own, where Put Blob gives Content-Type
    )


def with_query(url: str, **params: str) -> str:
    """url with more query parameters (after a SAS token's, when it has one)."""
    return url + ("&" if "?" in url else "?") + urlencode(params)


async def _put(
    http: httpx.AsyncClient,
    account: BlobAccount,
    url: str,
    body: bytes,
    *,
    content_type: str = "",
    **ms: str,
) -> None:
    headers = account.signed_headers("PUT", url, length=len(body), content_type=content_type, **ms)
    content = _handed_over([body]) if body else b""  # empty: Content-Length 0, not chunked
    del body
    response = await http.put(url, content=content, headers=headers)
    if response.status_code >= 300:
        raise BlobRefused(response)


async def _handed_over(pieces: list[bytes]) -> AsyncIterator[bytes]:
    """The one piece, let go of once sent. httpx keeps a request's body as long as the request,
    which a reference cycle with its response keeps until the garbage collector runs: given a
    block itself, a blob's blocks would pile up in memory until then."""
    yield pieces.pop()
