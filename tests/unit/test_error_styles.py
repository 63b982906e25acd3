"""A facade's error style: every error under its prefix renders its way, wherever it arises."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from app.core.errors import GatewayError, QueueFull
from app.edge.api_keys import ApiKeys
from app.edge.auth import ApiKeyAuth
from app.edge.body_limit import BodySizeLimit
from app.edge.errors import add_error_style, install_handlers


def nested(error: GatewayError) -> Response:
    body = {"error": {"code": error.code, "message": error.message}}
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def make_app() -> FastAPI:
    app = FastAPI()
    install_handlers(app)
    add_error_style(app, "/styled/", nested)
    app.add_middleware(BodySizeLimit, max_bytes=10)
    app.add_middleware(ApiKeyAuth, keys=ApiKeys(["k"]))

    for prefix in ("/styled", "/plain"):

        @app.post(f"{prefix}/full")
        async def full() -> None:
            raise QueueFull("the queue is full", headers={"Retry-After": "5"})

        @app.get(f"{prefix}/crash")
        async def crash() -> None:
            raise RuntimeError("boom")

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(), raise_app_exceptions=False)
    headers = {"X-API-Key": "k"}
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as c:
        yield c


@pytest.mark.parametrize(
    ("method", "path", "status", "code", "headers"),
    [
        ("POST", "/full", 429, "queue_full", {}),  # raised by a route
        ("GET", "/crash", 500, "internal_error", {}),  # an unexpected exception
        ("GET", "/nothing-here", 404, "not_found", {}),  # the router
        ("GET", "/full", 405, "method_not_allowed", {}),
        ("POST", "/full", 401, "unauthorized", {"X-API-Key": "wrong"}),  # a middleware
    ],
)
async def test_errors_under_the_prefix_take_its_style_and_others_keep_ours(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    status: int,
    code: str,
    headers: dict[str, str],
) -> None:
    styled = await client.request(method, f"/styled{path}", headers=headers)
    plain = await client.request(method, f"/plain{path}", headers=headers)
    assert styled.status_code == plain.status_code == status
    assert styled.json()["error"]["code"] == code
    assert plain.json()["code"] == code and isinstance(plain.json()["error"], str)
    if status == 429:
        assert styled.headers["retry-after"] == "5"
    if status == 405:
        assert styled.headers["allow"] == "POST"


async def test_the_body_limit_renders_in_the_style_of_its_path(client: httpx.AsyncClient) -> None:
    styled = await client.post("/styled/full", content=b"x" * 11)
    assert styled.status_code == 413
    assert styled.json()["error"]["code"] == "payload_too_large"


async def test_the_prefix_itself_without_its_slash_is_styled(client: httpx.AsyncClient) -> None:
    response = await client.get("/styled")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
