"""The passthrough's uploads (POST /upload/image, /upload/mask): the form read as ComfyUI reads
it, held to the input caps, and rebuilt.

ComfyUI reads the first of each field of the form (`image`, `subfolder`, `type`, `overwrite`,
and for a mask `original_ref`, the file the mask's alpha is laid on, `output` by default) and
writes the file under its name as given, into whichever folder `type` names. So the form is read
here once, for every caller but an admin key (COMFY_PASSTHROUGH=true), and a 400 located at the
field refuses: a repeated field, an `image` that is not a file, a file name that is not a plain
name (folders, annotations: app.compat.comfy.parse), a `type` other than `input`, a
subfolder that is not a plain relative path or that is one of the gateway's folders (`gw-…`), a
mask without a readable original_ref. Each file is held to the input caps (INPUT_MAX_MB,
MAX_INPUT_PIXELS from its header) and ComfyUI gets a form rebuilt from what was read; fields
ComfyUI does not read are dropped.

With API keys the file goes into the key's own folder (app.core.keys.key_folder): a subfolder
the key gives is made inside it, so no key writes beside another's files or finds them by name
(ComfyUI's LoadImage lists only the files at the top of the input folder). ComfyUI's answer
names the folder, which a client passes to its loader as it would any subfolder. A mask's
original_ref must be a file the key may /view.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile

from app.compat.comfy.parse import (
    FileRef,
    file_ref,
    in_folder,
    plain_folder,
    plain_name,
    shown,
)
from app.core.errors import InvalidRequest, NotFound
from app.core.keys import GATEWAY_FOLDER_PREFIX, Caller
from app.media.caps import InputCaps

FIELDS = ("image", "subfolder", "type", "overwrite", "original_ref")  # what ComfyUI reads
UPLOAD_PARTS = 16


@dataclass(frozen=True)
class Upload:
    """The rebuilt form, and its content type (with the boundary)."""

    body: bytes
    content_type: str


async def rebuilt_upload(
    request: Request,
    caps: InputCaps,
    caller: Caller,
    may_read: Callable[[FileRef], Awaitable[bool]],
    *,
    mask: bool,
) -> Upload:
    """The upload's form as ComfyUI gets it; a 400 (404 for an original_ref the key may not
    read) before any of it reaches ComfyUI."""
    try:
        form = await request.form(max_files=UPLOAD_PARTS, max_fields=UPLOAD_PARTS)
    except HTTPException as e:
        raise InvalidRequest(f"the upload is not a form ComfyUI can read: {e.detail}") from None
    try:
        fields: dict[str, str | UploadFile] = {}
        for name, value in form.multi_items():
            if name in fields:
                raise InvalidRequest(
                    f"{name} is given more than once; ComfyUI would read only the first",
                    location=name,
                )
            if name in FIELDS:
                fields[name] = value
        image = fields.get("image")
        if not isinstance(image, UploadFile):
            raise InvalidRequest("image must be a file part of the form", location="image")
        name = plain_name(image.filename, "image")
        caps.check_bytes(image.size or 0, "image")
        data = await image.read()
        await caps.check_off_loop(data, "image")
    finally:
        await form.close()
    text = {k: v for k, v in fields.items() if isinstance(v, str)}
    if text.get("type", "input") != "input":
        raise InvalidRequest(
            f"type must be input: uploads go to ComfyUI's input folder, not {shown(text['type'])}",
            location="type",
        )
    form_fields = {"subfolder": folder_of(text.get("subfolder", ""), caller), "type": "input"}
    if "overwrite" in text:
        form_fields["overwrite"] = text["overwrite"]
    if mask:
        form_fields["original_ref"] = await original_ref(text.get("original_ref"), may_read)
    # ComfyUI reads no part's content type; one of ours leaves nothing of the client's headers.
    part = (name, data, "application/octet-stream")
    built = httpx.Request("POST", "http://comfyui/upload", files={"image": part}, data=form_fields)
    return Upload(built.read(), built.headers["content-type"])


def folder_of(given: str, caller: Caller) -> str:
    """The subfolder the file goes to: inside the key's own folder with API keys."""
    subfolder = plain_folder(given, "subfolder")
    own = caller.folder
    if own is None:
        if subfolder.startswith(GATEWAY_FOLDER_PREFIX):
            raise InvalidRequest(
                f"subfolder {shown(subfolder)}: folders starting with {GATEWAY_FOLDER_PREFIX} are "
                "the gateway's (the input files of its jobs)",
                location="subfolder",
            )
        return subfolder
    if in_folder(subfolder, own):
        return subfolder  # as a previous upload's answer named it
    return posixpath.join(own, subfolder) if subfolder else own


async def original_ref(given: str | None, may_read: Callable[[FileRef], Awaitable[bool]]) -> str:
    """A mask's original_ref, checked as ComfyUI reads it, re-encoded."""
    try:
        ref = json.loads(given) if given is not None else None
    except ValueError:
        ref = None
    if not isinstance(ref, dict):
        raise InvalidRequest(
            "original_ref must be a JSON object naming the image the mask is for "
            '({"filename", "type", "subfolder"})',
            location="original_ref",
        )
    at = "original_ref."
    folder_type, subfolder, filename = file_ref(
        ref.get("filename"), ref.get("type", "output"), ref.get("subfolder", ""), at
    )
    if not await may_read((folder_type, subfolder, filename)):
        raise NotFound(
            "original_ref: no such file among this API key's prompts and uploads",
            location="original_ref",
        )
    return json.dumps({"filename": filename, "type": folder_type, "subfolder": subfolder})
