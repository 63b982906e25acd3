"""GET (and HEAD) /internal/fleet/files/{token}: an output file of a job this gateway ran, for
the fleet's gateway that answers the job (app.core.remote_file fetches it), streamed from where
it lies here (app.fleet.shelf).

Only the fleet's gateways may ask: the request proves the fleet's secret (`X-Fleet-Secret`,
compared in constant time), not an API key (the API-key check lets the path through to this
one). Without it, or with another, the answer is 401 whatever the token, so nobody learns which
tokens exist; with it, an unknown token (never one, or its job's record let go) is 404. Not in
/docs: no client of the API calls it.
"""

from __future__ import annotations

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response, StreamingResponse

from app.core.errors import NotFound, Unauthorized
from app.core.remote_file import SECRET_HEADER
from app.fleet.shelf import FILES_PATH
from app.routes.deps import GatewayDep

router = APIRouter(include_in_schema=False)


@router.api_route(FILES_PATH + "{token}", methods=["GET", "HEAD"])
async def fleet_file(
    token: str,
    request: Request,
    gateway: GatewayDep,
    secret: str | None = Header(None, alias=SECRET_HEADER),
) -> Response:
    """The file's bytes, with its length and media type; HEAD: whether it is still here."""
    shelf = gateway.backend.shelf
    if shelf is None or not shelf.allows(secret):
        raise Unauthorized(f"needs the fleet's secret ({SECRET_HEADER})")
    file = shelf.get(token)
    if file is None:
        raise NotFound("no such file here (any more)", location="token")
    headers = {"Content-Length": str(file.size)}
    if request.method == "HEAD":
        return Response(media_type=file.content_type, headers=headers)
    return StreamingResponse(file.chunks(), media_type=file.content_type, headers=headers)
