"""JSON request bodies read once, strictly (app.core.strict_json), on every route of the app.

FastAPI reads a route's JSON body with `Request.json()`, which is `json.loads`: it takes NaN,
lone surrogates and nesting deep enough to raise RecursionError, and it turns a failure into an
unlocated 400 of its own. StrictJsonRoute (FastAPI's documented seam for a custom Request) gives
each route a Request whose `json()` is the strict reader, and reads a JSON body before FastAPI
does, so that what is not strict JSON answers as the gateway's located 400. FastAPI then reuses
the value: the body is parsed once.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.params import Form
from fastapi.routing import APIRoute

from app.core import strict_json


class StrictJsonRequest(Request):
    """A Request whose `json()` is the strict reader."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = await strict_json.read(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    """An APIRoute whose JSON body, when it takes one, is read strictly."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        field = self.body_field
        if field is None or isinstance(field.field_info, Form):
            return handler  # no JSON body to read

        async def strict(request: Request) -> Response:
            request = StrictJsonRequest(request.scope, request.receive)
            # An empty body is FastAPI's to answer ("field required").
            if json_media_type(request.headers.get("content-type")) and await request.body():
                await request.json()
            return await handler(request)

        return strict


def json_media_type(content_type: str | None) -> bool:
    """Whether FastAPI reads a body of this Content-Type as JSON (`application/json`, `+json`)."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    kind, _, subtype = media.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))
