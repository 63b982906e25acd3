"""BodySizeLimit: bodies over the cap are refused with 413, declared or streamed."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from app.edge.body_limit import BodySizeLimit
from app.edge.errors import install_handlers

CAP = 1000


def make_app() -> FastAPI:
    app = FastAPI()
    install_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=CAP)

    @app.post("/raw")
    async def raw(request: Request) -> dict[str, int]:
        return {"length": len(await request.body())}

    @app.post("/json")
    async def parsed(body: dict[str, Any]) -> dict[str, int]:
        # A JSON body parameter, as POST /prompt reads its body.
        return {"length": len(body["data"])}

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
        yield c


def json_body(size: int) -> bytes:
    """A JSON object of exactly `size` bytes."""
    overhead = len(b'{"data":""}')
    return b'{"data":"' + b"x" * (size - overhead) + b'"}'


async def chunks(body: bytes, size: int = 100) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413
    body = response.json()
    assert set(body) <= {"error", "code", "location", "details"}
    assert body["code"] == "payload_too_large"
    assert "MAX_BODY_SIZE_MB" in body["error"]


JSON = {"content-type": "application/json"}
ROUTES = ["/raw", "/json"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("size", [100, CAP - 1, CAP])
async def test_under_the_cap_passes(client: httpx.AsyncClient, route: str, size: int) -> None:
    response = await client.post(route, content=json_body(size), headers=JSON)
    assert response.status_code == 200
    expected = size if route == "/raw" else size - len(b'{"data":""}')
    assert response.json() == {"length": expected}


@pytest.mark.parametrize("route", ROUTES)
async def test_streamed_under_the_cap_passes(client: httpx.AsyncClient, route: str) -> None:
    response = await client.post(route, content=chunks(json_body(CAP)), headers=JSON)
    assert response.status_code == 200


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("size", [CAP + 1, 50 * CAP])
async def test_declared_length_over_the_cap(
    client: httpx.AsyncClient, route: str, size: int
) -> None:
    response = await client.post(route, content=json_body(size), headers=JSON)
    assert response.request.headers["content-length"] == str(size)
    assert_too_large(response)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("size", [CAP + 1, 50 * CAP])
async def test_streamed_body_over_the_cap(client: httpx.AsyncClient, route: str, size: int) -> None:
    response = await client.post(route, content=chunks(json_body(size)), headers=JSON)
    assert "content-length" not in response.request.headers
    assert_too_large(response)


@pytest.mark.parametrize(
    "route",
    [
        "/raw",
        "/json",
    ],
)
async def test_streamed_refusal_is_not_a_crash(
    route: str, caplog: pytest.LogCaptureFixture
) -> None:
    transport = httpx.ASGITransport(app=make_app())  # app exceptions are raised here
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        response = await client.post(route, content=chunks(json_body(5 * CAP)), headers=JSON)
    assert_too_large(response)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
