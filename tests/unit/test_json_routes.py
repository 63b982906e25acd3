"""Every route of the app that reads JSON reads it strictly (app.routes.json_body): what is not
strict JSON is a located 400 before the route does anything (here, before it would find that the
gateway has not started: a 503)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from app.core import strict_json
from app.core.settings import load_settings
from app.main import create_app
from app.routes.json_body import StrictJsonRoute

APP = create_app(load_settings(comfy_passthrough="true"))


def api_routes(routes: list[BaseRoute]) -> list[APIRoute]:
    """Every APIRoute, in included routers too (FastAPI includes a router as one route)."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif (router := getattr(route, "original_router", None)) is not None:
            found += api_routes(router.routes)
    return found


JSON_ROUTES = [r for r in api_routes(APP.routes) if r.body_field is not None]

# Routes that read JSON by hand (multipart too: /api/v1/prompts takes either).
BY_HAND = ["/api/v1/prompts", "/api/v2/jobs", "/api/v2/assets/from-hash"]
MODELLED = sorted({re.sub(r"\{[^}]+\}", "x", route.path) for route in JSON_ROUTES})

NOT_STRICT = {
    "nan": b'{"prompt": {"1": {"class_type": "A", "inputs": {"cfg": NaN}}}}',
    "infinity": b'{"prompt": {"1": {"class_type": "A", "inputs": {"cfg": Infinity}}}}',
    "-infinity": b'{"cfg": -Infinity, "cache": true}',
    "overflow": b'{"cfg": 1e999}',
    "surrogate": b'{"prompt": {"1": {"class_type": "A", "inputs": {"text": "\\ud800"}}}}',
    "deep": b'{"x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "huge-int": b'{"seed": ' + b"1" * 5000 + b"}",
    "bom": b'\xef\xbb\xbf{"prompt": {}}',
}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=APP, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
        yield c


def test_every_route_with_a_json_body_is_strict() -> None:
    assert {"/prompt", "/interrupt", "/models/download", "/sdapi/v1/txt2img"} <= set(MODELLED)
    assert [r.path for r in JSON_ROUTES if not isinstance(r, StrictJsonRoute)] == []
    # The workflow routes are mounted on the app's own router once ComfyUI answers.
    assert APP.router.route_class is StrictJsonRoute


def location_of(body: dict[str, object]) -> object:
    error = body["error"]
    if isinstance(error, dict):  # the Comfy API v2's envelope
        details = error["details"]
        assert isinstance(details, dict)
        return details.get("location")
    return body.get("location")


@pytest.mark.parametrize("kind", sorted(NOT_STRICT))
@pytest.mark.parametrize("path", MODELLED + BY_HAND)
async def test_not_strict_json_is_a_located_400(
    client: httpx.AsyncClient, path: str, kind: str
) -> None:
    response = await client.post(
        path, content=NOT_STRICT[kind], headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert str(location_of(response.json())).startswith("body"), response.text


@pytest.mark.parametrize("kind", sorted(NOT_STRICT))
async def test_the_passthrough_refuses_a_body_it_cannot_check(
    client: httpx.AsyncClient, kind: str
) -> None:
    response = await client.post(
        "/comfy/interrupt", content=NOT_STRICT[kind], headers={"content-type": "application/json"}
    )
    assert response.status_code == 403, response.text
    assert "cannot be checked" in response.json()["error"]


async def test_a_multipart_prompt_field_is_strict_too(client: httpx.AsyncClient) -> None:
    graph = '{"1": {"class_type": "SaveImage", "inputs": {"filename_prefix": NaN}}}'
    response = await client.post("/api/v1/prompts", files={"prompt": (None, graph)})
    assert response.status_code == 400, response.text
    assert response.json()["location"] == "prompt"


async def test_strict_json_still_reaches_the_route(client: httpx.AsyncClient) -> None:
    # Valid JSON passes the reader: the route runs, and finds the gateway not started.
    response = await client.post(
        "/prompt", json={"prompt": {"1": {"class_type": "A", "inputs": {"t": "\U0001f680"}}}}
    )
    assert response.status_code == 503, response.text


async def test_the_body_is_parsed_once(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = strict_json.loads

    def counted(raw: bytes | str, where: str = "body") -> object:
        calls.append(len(raw))
        return real(raw, where)

    monkeypatch.setattr(strict_json, "loads", counted)
    body = {"prompt": {"1": {"class_type": "A", "inputs": {}}}, "id": "once"}
    assert (await client.post("/prompt", json=body)).status_code == 503  # not started
    assert len(calls) == 1
