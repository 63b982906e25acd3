"""A passthrough request read once, as ComfyUI's aiohttp reads it; what goes on is that reading.

ComfyUI reads each query parameter once, the first of repeated ones (`request.rel_url.query`),
and a file name with its folder annotation (`x.png [output]` is a file of the output folder);
Starlette, and so a check written with it, reads the last of repeated ones. So that what is
checked is what runs, a request COMFY_PASSTHROUGH=true forwards (for every caller but an admin
key) is parsed here once, and ComfyUI gets the parsed form re-encoded (the path and query here,
the bodies in app.compat.comfy.submit and upload), never the bytes as sent.

A 400 located at what is wrong: a repeated query parameter, a malformed percent escape or one
that is not UTF-8 (in the path or the query), and in a file's name or folder (/view, a mask's
original_ref, an upload): a name with a folder in it, an annotated name, a `..`, `.` or empty
folder segment, a `\\`, a control character, a folder type other than input, output or temp.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote_to_bytes, urlencode

from app.core.errors import InvalidRequest

FileRef = tuple[str, str, str]  # type, subfolder, filename: what /view names a file by
FOLDER_TYPES = ("input", "output", "temp")
ANNOTATIONS = ("[input]", "[output]", "[temp]")  # folder_paths.annotated_filepath's suffixes
BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
# Control characters, separators, and `"`, which a multipart header cannot carry as it is.
NOT_IN_NAMES = re.compile(r'[\x00-\x1f\x7f/\\"]')
NAME_MAX = 255


def decoded(raw: bytes, where: str, *, plus_is_space: bool = False) -> str:
    """Percent-decoded UTF-8 (a `+` is a space in a query, as aiohttp reads it)."""
    if BAD_ESCAPE.search(raw):
        raise InvalidRequest(f"{where}: a malformed percent escape", location=where)
    try:
        return unquote_to_bytes(raw.replace(b"+", b" ") if plus_is_space else raw).decode()
    except UnicodeDecodeError:
        raise InvalidRequest(f"{where}: not UTF-8 once percent-decoded", location=where) from None


def path_parts(raw_path: bytes) -> tuple[str, ...]:
    """The path's segments as aiohttp routes it: split on `/` as sent, then each decoded (so a
    `%2F` stays inside its segment)."""
    return tuple(decoded(part, "path") for part in raw_path.removeprefix(b"/").split(b"/"))


def parse_query(raw: bytes) -> dict[str, str]:
    """Each parameter's one value; a repeated one is a 400 (ComfyUI reads a parameter once)."""
    params: dict[str, str] = {}
    for pair in raw.split(b"&"):
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition(b"=")
        name = decoded(raw_name, "query", plus_is_space=True)
        value = decoded(raw_value, name, plus_is_space=True)
        if name in params:
            raise InvalidRequest(
                f"query parameter {name!r} is given more than once; ComfyUI would read only "
                "the first, so give it once",
                location=name,
            )
        params[name] = value
    return params


def encoded(params: dict[str, str]) -> str:
    """A query encoded from what was parsed (every byte but letters, digits and `_.-~` as %XX)."""
    return urlencode(params, quote_via=quote)


def target(parts: tuple[str, ...], params: dict[str, str]) -> str:
    """The path and query for ComfyUI, encoded from what was parsed."""
    path = "/" + "/".join(quote(part, safe="") for part in parts)
    return f"{path}?{encoded(params)}" if params else path


def plain_name(name: object, where: str) -> str:
    """A file's name as ComfyUI will use it: no folder, no annotation, nothing a header or a
    path would read otherwise."""
    if (
        not isinstance(name, str)
        or not name.strip(". ")
        or NOT_IN_NAMES.search(name)
        or len(name.encode()) > NAME_MAX
    ):
        raise InvalidRequest(
            f"{where}: a file name must be a plain name (no folder, no control characters or "
            f'`"`, at most {NAME_MAX} bytes), not {shown(name)}',
            location=where,
        )
    if name.endswith(ANNOTATIONS):
        raise InvalidRequest(
            f"{where}: a name ending in [input], [output] or [temp] makes ComfyUI use another "
            f"folder than the one named: {shown(name)}",
            location=where,
        )
    return name


def plain_folder(folder: object, where: str) -> str:
    """A subfolder as ComfyUI joins it to its folder: relative, plain segments ('' is none)."""
    if not isinstance(folder, str):
        raise InvalidRequest(f"{where}: must be a string", location=where)
    if folder and any(
        part in ("", ".", "..") or NOT_IN_NAMES.search(part) for part in folder.split("/")
    ):
        raise InvalidRequest(
            f"{where}: a subfolder must be a relative path of plain names (no `..`, `.`, empty "
            f"segment, `\\` or leading `/`), not {shown(folder)}",
            location=where,
        )
    return folder


def file_ref(filename: object, folder_type: object, subfolder: object, at: str = "") -> FileRef:
    """A file as /view (or a mask's original_ref) names it, checked; `at` prefixes locations."""
    if folder_type not in FOLDER_TYPES:
        raise InvalidRequest(
            f"{at}type must be one of {', '.join(FOLDER_TYPES)}, not {shown(folder_type)}",
            location=f"{at}type",
        )
    subfolder = plain_folder(subfolder, f"{at}subfolder")
    return str(folder_type), subfolder, plain_name(filename, f"{at}filename")


def view_file(params: dict[str, str]) -> FileRef:
    """The file GET /view serves, read as ComfyUI reads its query (type defaults to output)."""
    if "filename" not in params:
        raise InvalidRequest("filename is required", location="filename")
    return file_ref(params["filename"], params.get("type", "output"), params.get("subfolder", ""))


def in_folder(subfolder: str, folder: str) -> bool:
    """Whether `subfolder` is `folder` or inside it."""
    return subfolder == folder or subfolder.startswith(folder + "/")


def shown(value: object) -> str:
    quoted = repr(value)
    return quoted if len(quoted) <= 80 else quoted[:77] + "..."
