"""The graph a POST /api/v1/prompts carries: JSON, or multipart/form-data with its input files.

JSON is the bare graph (as the fork's client sends it), or `{"prompt": graph}` (as the fork's
docs show it). Multipart has a `prompt` part (a field, or a part of type application/json) and
file parts; a loader input (the LoadImage family) whose value is a file part's name gets that
file's content instead, as base64. The gateway then hands it to ComfyUI in the job's own input
subfolder, as it does any base64 input, so two requests that both send `input.png` never see
each other's file, and the digest of the request covers the files' bytes.
"""

from __future__ import annotations

import base64
import errno
import posixpath
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile

from app.core import strict_json
from app.core.errors import InsufficientStorage, InvalidRequest
from app.jobs.inputs import LOADERS
from app.media.caps import InputCaps

MAX_FILES = 64
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


async def read_graph(request: Request, max_part_bytes: int, caps: InputCaps) -> Any:
    """The request's graph (unchecked), its files inlined where its loader inputs name them.

    Each file is held to the input caps (app.media.caps) as it is read: a 400
    located at `files.<name>`.
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        return await _read_multipart(request, max_part_bytes, caps)
    # As the fork does, anything else (no Content-Type, text/plain) is read as JSON.
    return unwrap(await _json(await request.body(), "body"))


def unwrap(data: Any) -> Any:
    """The graph in `{"prompt": graph}`, or data itself (a bare graph)."""
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict):
        inner = data["prompt"]
        if "class_type" not in inner:  # not a node that happens to have the id "prompt"
            return inner
    return data


async def _json(raw: bytes | str, where: str) -> Any:
    """Strict JSON (app.core.strict_json), with what to send when it is not JSON at all."""
    try:
        return await strict_json.read(raw, where)
    except InvalidRequest as e:
        hint = "; send the graph in ComfyUI's API format"
        raise InvalidRequest(e.message + hint, location=e.location) from None


async def _read_multipart(request: Request, max_part_bytes: int, caps: InputCaps) -> Any:
    try:
        form = await request.form(
            max_files=MAX_FILES, max_fields=MAX_FILES, max_part_size=max_part_bytes
        )
    except OSError as e:
        if e.errno in DISK_FULL:
            raise InsufficientStorage(f"the disk is full while receiving the files: {e}") from e
        raise
    try:
        prompt: Any = None
        files: dict[str, bytes] = {}
        for name, value in form.multi_items():
            if not isinstance(value, UploadFile):
                if name == "prompt":
                    prompt = await _json(value, "prompt")
                continue
            is_json = (value.content_type or "").split(";")[0].strip() == "application/json"
            if name == "prompt" or (is_json and prompt is None and "prompt" not in form):
                prompt = await _json(await value.read(), "prompt")
            else:
                named = file_name(value.filename, name)
                caps.check_bytes(value.size or 0, f"files.{named}")  # before it is read whole
                files[named] = await value.read()
    finally:
        await form.close()
    if prompt is None:
        raise InvalidRequest(
            "a multipart request needs a `prompt` part: the graph as JSON", location="prompt"
        )
    graph = inline_files(unwrap(prompt), files)  # a file no loader names: that 400 first
    for named, data in files.items():
        await caps.check_off_loop(data, f"files.{named}")
    return graph


def file_name(given: str | None, field: str) -> str:
    """The name a file part is known by in the graph: its file name, never a path."""
    name = (given or "").strip()
    if not name or "/" in name or "\\" in name or name in (".", "..") or "\x00" in name:
        raise InvalidRequest(
            f"{field}: a file part needs a plain file name (no folders), not {given!r}",
            location=field,
        )
    return posixpath.basename(name)


def inline_files(graph: Any, files: dict[str, bytes]) -> Any:
    """The graph with each loader input that names an uploaded file holding its base64."""
    if not files:
        return graph
    if not isinstance(graph, dict):
        return graph  # check_graph says what is wrong with it
    used: set[str] = set()
    rewritten = dict(graph)
    for node_id, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
            continue
        for input_name in LOADERS.get(str(node.get("class_type")), {}):
            value = node["inputs"].get(input_name)
            name = value.removesuffix(" [input]") if isinstance(value, str) else None
            if name in files:
                used.add(name)
                inputs = {**node["inputs"], input_name: base64.b64encode(files[name]).decode()}
                rewritten[node_id] = {**node, "inputs": inputs}
    if unused := sorted(set(files) - used):
        loaders = ", ".join(sorted(LOADERS))
        raise InvalidRequest(
            f"files {unused} are named by no loader input of the graph ({loaders}): give the "
            "file's name as the value of the node's file input",
            location="files",
        )
    return rewritten
