"""A job's outcome as the fleet's Redis holds it: written once by the gateway that ran the job,
read back by any gateway (the request that waits for it, GET /prompt/{id}, a facade, webhooks
delivered again).

Redis holds the /prompt body without its images (the job's `complete` event) and, in `files`,
each file's metadata: its name, size, node and content type, and where its bytes are: the URL
an upload gave (`location`), or its URL on the gateway that ran the job (`url`,
app.fleet.shelf), fetched from there as an answer sends it. Only a small file (one held in
memory, up to 1 MiB) travels inline, as base64 (`base64`): the common image output costs no
second fetch, and reaches gateways that cannot reach each other. Nothing else bounds a file's
size.
"""

from __future__ import annotations

import base64
from typing import Any

from app.core.outcome import INLINE_READ_MAX_BYTES, JobOutcome, ResultFile, no_time
from app.core.remote_file import RemoteFile
from app.core.schemas import Stats
from app.fleet.shelf import FileShelf


def to_redis(outcome: JobOutcome, shelf: FileShelf) -> dict[str, Any]:
    """The outcome of a succeeded job as Redis keeps it (its `complete` event's data); its files
    not uploaded are put on the shelf, for other gateways to fetch."""
    body = outcome.head.model_dump(mode="json")
    del body["images"]
    body["files"] = [_metadata(f, shelf) for f in outcome.files]
    return body


def _metadata(file: ResultFile, shelf: FileShelf) -> dict[str, Any]:
    where: dict[str, Any]
    if file.location is not None:
        where = {"location": file.location}
    elif file.data is not None and len(file.data) <= INLINE_READ_MAX_BYTES:
        where = {"base64": base64.b64encode(file.data).decode("ascii")}
    else:
        where = {"url": shelf.put(file)}
    return {
        "name": file.name,
        "size": file.size,
        "node": file.node,
        "content_type": file.content_type,
        **where,
    }


def from_redis(body: dict[str, Any], shelf: FileShelf) -> JobOutcome:
    """The outcome read back from Redis: each file where an upload put it, or on the gateway
    that ran the job (this one's own file, when that is this gateway)."""
    stats = body.get("stats")
    return JobOutcome(
        id=str(body.get("id", "")),
        prompt=body.get("prompt") or {},
        files=tuple(_file(f, shelf) for f in body.get("files") or ()) or _earlier(body),
        stats=Stats.model_validate(stats) if stats is not None else no_time(),
        input=body.get("input"),
        warnings=tuple(body.get("warnings") or ()),
    )


def _file(meta: dict[str, Any], shelf: FileShelf) -> ResultFile:
    name, size, node = str(meta["name"]), int(meta["size"]), meta.get("node")
    content_type = str(meta.get("content_type") or "")
    if (location := meta.get("location")) is not None:
        return ResultFile(name, size, node, location=location, content_type=content_type)
    if (inline := meta.get("base64")) is not None:
        data = base64.b64decode(inline)
        return ResultFile(name, len(data), node, data=data, content_type=content_type)
    url = str(meta["url"])
    if (here := shelf.local(url)) is not None:
        return here
    remote = RemoteFile(url, shelf.secret)
    return ResultFile(name, size, node, remote=remote, content_type=content_type)


def _earlier(body: dict[str, Any]) -> tuple[ResultFile, ...]:
    """The files of a result recorded by a gateway of an earlier version (a rolling upgrade):
    in `images`, each one's base64 or, uploaded, its URL."""
    names, contents = body.get("filenames") or [], body.get("images") or []
    return tuple(
        ResultFile(name, 0, location=content)
        if "://" in content
        else ResultFile.of_bytes(name, base64.b64decode(content))
        for name, content in zip(names, contents, strict=False)
    )


async def check_available(outcome: JobOutcome) -> None:
    """Raise OutputsUnavailable, naming the gateway, when one of the outcome's files can no
    longer be fetched: before an answer starts, whose status could not change once sent."""
    for file in outcome.files:
        if file.remote is not None:
            await file.remote.check()
