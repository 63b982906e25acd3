"""Every error the gateway can answer with has the contract's shape: one test pins it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.core import errors
from app.core.errors import ComfyUnavailable, GatewayError
from app.core.schemas import PromptRequest
from app.edge.errors import install_handlers

SHAPE_KEYS = {"error", "code", "location", "details"}


def error_classes(base: type[GatewayError] = GatewayError) -> list[type[GatewayError]]:
    found = []
    for cls in base.__subclasses__():
        found.append(cls)
        found.extend(error_classes(cls))
    return found


ERROR_CLASSES = error_classes()


def make_app() -> FastAPI:
    app = FastAPI()
    install_handlers(app)

    @app.get("/raise/{name}")
    async def raise_error(name: str, located: bool = False) -> None:
        cls = next(c for c in ERROR_CLASSES if c.__name__ == name)
        if located:
            raise cls("it went wrong", location="prompt.3.inputs.seed", details={"why": [1, 2]})
        raise cls("it went wrong")

    @app.post("/prompt")
    async def prompt(body: PromptRequest) -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/crash")
    async def crash() -> None:
        raise RuntimeError("secret internal state: Traceback-looking text")

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
        yield c


def assert_shape(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert set(body) <= SHAPE_KEYS
    assert isinstance(body["error"], str)
    assert body["error"]
    assert body["code"] == code
    return body


def test_every_class_in_the_module_is_discovered() -> None:
    in_module = {
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, GatewayError) and obj is not GatewayError
    }
    assert in_module <= set(ERROR_CLASSES)
    assert len(ERROR_CLASSES) >= 11


def test_codes_are_unique() -> None:
    codes = [cls.code for cls in [GatewayError, *ERROR_CLASSES]]
    assert len(codes) == len(set(codes))


@pytest.mark.parametrize("located", [False, True], ids=["bare", "located"])
@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
async def test_error_shape(
    client: httpx.AsyncClient, cls: type[GatewayError], located: bool
) -> None:
    response = await client.get(f"/raise/{cls.__name__}", params={"located": located})
    body = assert_shape(response, cls.status, cls.code)
    assert 400 <= cls.status < 600
    assert body["error"] == "it went wrong"
    if located:
        assert body["location"] == "prompt.3.inputs.seed"
        assert body["details"] == {"why": [1, 2]}
    else:
        assert "location" not in body
        assert "details" not in body
    if issubclass(cls, ComfyUnavailable):
        assert int(response.headers["retry-after"]) > 0


async def test_validation_error_names_every_field(client: httpx.AsyncClient) -> None:
    bad = {
        "prompt": {
            "1": {"inputs": {"width": 64}},
            "2": {"class_type": "SaveImage", "inputs": "not a mapping"},
        },
        "id": "../not an id",
        "unexpected": True,
    }
    response = await client.post("/prompt", json=bad)
    body = assert_shape(response, 400, "invalid_request")
    assert body["location"] == body["details"]["errors"][0]["location"]  # the first, in field order
    locations = {e["location"] for e in body["details"]["errors"]}
    assert locations == {"prompt.1.class_type", "prompt.2.inputs", "id", "unexpected"}
    assert all(e["message"] for e in body["details"]["errors"])
    assert "body." not in response.text
    assert "prompt.1.class_type" in body["error"]


@pytest.mark.parametrize(
    ("content", "words"),
    [(b"", "body"), (b"{not json", "JSON"), (b"[]", "body")],
    ids=["empty", "not-json", "not-an-object"],
)
async def test_unparseable_body_is_invalid_request(
    client: httpx.AsyncClient, content: bytes, words: str
) -> None:
    response = await client.post(
        "/prompt", content=content, headers={"content-type": "application/json"}
    )
    body = assert_shape(response, 400, "invalid_request")
    assert words in body["error"]


async def test_unknown_route(client: httpx.AsyncClient) -> None:
    body = assert_shape(await client.get("/no/such/route"), 404, "not_found")
    assert "/no/such/route" in body["error"]


async def test_wrong_method(client: httpx.AsyncClient) -> None:
    body = assert_shape(await client.get("/prompt"), 405, "method_not_allowed")
    assert "GET" in body["error"]


async def test_wrong_method_says_which_are_allowed(client: httpx.AsyncClient) -> None:
    response = await client.get("/prompt")
    assert response.headers.get("allow") == "POST"


async def test_unexpected_error_is_500_without_internals(client: httpx.AsyncClient) -> None:
    response = await client.get("/crash")
    body = assert_shape(response, 500, "internal_error")
    assert "log" in body["error"]
    assert "secret" not in response.text
    assert "Traceback" not in response.text
    assert "RuntimeError" not in response.text
