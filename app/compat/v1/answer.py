"""How POST /api/v1/prompts answers: the file itself or `{"urls": [...]}`, and its headers.

The *main* output is the last file of the job (files ordered by node id, then position), as the
spec's description says ("the last SaveImage output node"). `Accept` decides between JSON and
the file: the file when the client prefers the main output's media type (or a wildcard that
covers it) to application/json; `image/png`, which every client of the fork sends, stands for
any image. No Accept, `*/*` or a tie: JSON.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi.responses import JSONResponse, Response

from app.compat.file_body import FileBody
from app.core.numbers import finite_number
from app.core.outcome import ResultFile, content_type_of


def accept_ranges(accept: str) -> list[tuple[str, float]]:
    """(media range, q) for each entry of an Accept header, as written."""
    found = []
    for entry in accept.split(","):
        media, *params = entry.split(";")
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":  # RFC 9110: 0 to 1; `nan`, `1e999`: not a q
                q = min(max(finite_number(value) or 0.0, 0.0), 1.0)
        if media.strip():
            found.append((media.strip().lower(), q))
    return found


def quality(ranges: list[tuple[str, float]], media: str) -> float:
    """How much the client wants this media type: the q of the best matching range; 0 if none."""
    kind = media.split("/")[0]
    best = 0.0
    for given, q in ranges:
        if given in (media, "*/*", f"{kind}/*"):
            best = max(best, q)
    return best


def wants_file(accept: str | None, media: str) -> bool:
    """Whether to answer with the file itself rather than JSON."""
    ranges = accept_ranges(accept or "")
    if not ranges:
        return False
    wanted = quality(ranges, media)
    if media.startswith("image/"):
        wanted = max(wanted, quality(ranges, "image/png"))
    return wanted > 0 and wanted > quality(ranges, "application/json")


def image_url(digest: str, name: str | None = None) -> str:
    return f"/api/v1/images/{digest}" + (f"/{quote(name, safe='')}" if name else "")


def disposition(name: str) -> str:
    # The spec's form (`filename=...`), quoted; a quote or a control character cannot break out.
    clean = "".join(c if c.isprintable() and c not in '"\\' else "_" for c in name)
    return f'filename="{clean}"'


def file_response(file: ResultFile, headers: dict[str, str]) -> Response:
    """The file itself, streamed from where it lies (the spool, for a large one), with its
    Content-Length: never whole in memory."""
    headers = {**headers, "Content-Disposition": disposition(file.name)}
    return FileBody(file, headers)


def answer(
    files: tuple[ResultFile, ...], digest: str, accept: str | None, headers: dict[str, str]
) -> Response:
    """200 with the main file or the URLs of every file; 204 when the job saved none."""
    if not files:
        return Response(status_code=204, headers=headers)
    main = files[-1]
    headers = {**headers, "Location": image_url(digest)}
    if wants_file(accept, content_type_of(main.name)):
        return file_response(main, headers)
    urls = [image_url(digest), *(image_url(digest, f.name) for f in files)]
    headers["Content-Disposition"] = disposition(main.name)
    return JSONResponse({"urls": urls}, headers=headers)
