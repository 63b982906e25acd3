"""API keys: settings, the key set (constant-time, file reload), the middleware, the docs."""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, WebSocket
from starlette.types import Message

from app.core.settings import SettingsError, load_settings
from app.edge.api_keys import ApiKeys
from app.edge.auth import OPEN_PATHS
from app.main import create_app

KEY = "k3y-0123456789abcdef"
OTHER = "0th3r-key_ABCDEFGHIJ"
SHAPE_KEYS = {"error", "code", "location", "details"}


# --- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (f"{KEY}", [KEY]),
        (f" {KEY} , {OTHER} ,", [KEY, OTHER]),
        ("", []),
        ("a" * 16 + "==", ["a" * 16 + "=="]),
        ("abc.DEF-ghi_jkl~mn+op/q", ["abc.DEF-ghi_jkl~mn+op/q"]),
    ],
    ids=["one", "list-with-blanks", "empty", "padding", "b64token-chars"],
)
def test_api_keys_parsed(monkeypatch: pytest.MonkeyPatch, raw: str, expected: list[str]) -> None:
    monkeypatch.setenv("API_KEYS", raw)
    settings = load_settings()
    assert [k.get_secret_value() for k in settings.api_keys] == expected
    assert KEY not in repr(settings)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("short-key", "9 characters; use at least 16"),
        (f"{KEY},has space inside it!", "key 2 of 2 has characters"),
        ("é" * 20, "characters other than"),
        ("a=b" + "c" * 20, "characters other than"),
    ],
    ids=["too-short", "space", "non-ascii", "inner-equals"],
)
def test_bad_api_key_is_named_without_repeating_it(
    monkeypatch: pytest.MonkeyPatch, raw: str, words: str
) -> None:
    monkeypatch.setenv("API_KEYS", raw)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "API_KEYS" in message
    assert words in message
    for key in raw.split(","):
        assert key not in message


def test_key_file_parsed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# customers\r\n{KEY}  # acme\r\n\r\n   \n{OTHER}\n# retired: nothing\n")
    monkeypatch.setenv("API_KEYS_FILE", str(path))
    monkeypatch.setenv("API_KEYS", "b" * 16)
    keys = ApiKeys.from_settings(load_settings())
    assert keys is not None
    assert len(keys) == 3
    assert all(keys.accepts(k) for k in (KEY, OTHER, "b" * 16))


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "cannot be read"),
        ("# only a comment\n\n", "holds no key"),
        (f"{KEY}\ntoo-short\n", "line 2: the key is 9 characters"),
        (b"\xff\xfe" + b"x" * 20, "cannot be read"),
    ],
    ids=["missing", "no-key", "bad-line", "not-utf8"],
)
def test_bad_key_file_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str | bytes | None, words: str
) -> None:
    path = tmp_path / "keys"
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    monkeypatch.setenv("API_KEYS_FILE", str(path))
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "API_KEYS_FILE" in str(caught.value)
    assert words in str(caught.value)
    assert "too-short" not in str(caught.value)


def test_no_keys_means_no_auth() -> None:
    assert ApiKeys.from_settings(load_settings()) is None


# --- the key set ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("presented", "accepted"),
    [(KEY, True), (OTHER, True), (KEY[:-1], False), (KEY + "x", False), ("", False),
     (KEY.upper(), False)],
    ids=["first", "second", "prefix", "longer", "empty", "case"],
)  # fmt: skip
def test_accepts_exactly_the_keys(presented: str, accepted: bool) -> None:
    assert ApiKeys([KEY, OTHER]).accepts(presented) is accepted


def test_every_key_is_compared_even_after_a_match(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    keys = ApiKeys([KEY, OTHER, "c" * 16])
    assert keys.accepts(KEY)
    assert len(calls) == 3  # no early exit: the time does not say which key matched
    assert {len(a) for a, _ in calls} == {32}  # digests: equal lengths whatever was sent


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_key_file_is_reloaded_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(KEY + "\n")
    clock = Clock()
    keys = ApiKeys([], path, reload_s=5, clock=clock)
    assert keys.accepts(KEY)
    path.write_text(OTHER + "\n# KEY was revoked\n")
    clock.now += 1
    assert keys.accepts(KEY), "re-read only after reload_s"
    clock.now += 5
    assert keys.accepts(OTHER)
    assert not keys.accepts(KEY)


@pytest.mark.parametrize("breakage", ["deleted", "emptied", "bad-key"])
def test_broken_key_file_keeps_the_last_good_keys(
    tmp_path: Path, breakage: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys"
    path.write_text(KEY + "\n")
    clock = Clock()
    keys = ApiKeys([], path, reload_s=5, clock=clock)
    if breakage == "deleted":
        path.unlink()
    elif breakage == "emptied":
        path.write_text("")
    else:
        path.write_text("nope\n")
    with caplog.at_level(logging.WARNING, logger="app.edge.api_keys"):
        for _ in range(3):  # three reloads, one warning
            clock.now += 10
            assert keys.accepts(KEY)
            assert not keys.accepts("nope")
    assert [r.getMessage().count("keeping the previous keys") for r in caplog.records] == [1]
    assert KEY not in caplog.text
    path.write_text(OTHER + "\n")  # fixed: the new keys apply
    clock.now += 10
    assert keys.accepts(OTHER)
    assert not keys.accepts(KEY)


# --- the middleware, in the real app (no ComfyUI: the app's lifespan is not run) ------------


@pytest.fixture(scope="module")
def app() -> FastAPI:
    app = create_app(load_settings(api_keys=f"{KEY},{OTHER}"))

    @app.get("/added-later")
    async def added_later() -> dict[str, bool]:
        return {"ok": True}

    # Not /ws: with the passthrough on, that is ComfyUI's websocket.
    @app.websocket("/added-ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    return app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
        yield c


def assert_401(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    body: dict[str, Any] = response.json()
    assert set(body) <= SHAPE_KEYS
    assert body["code"] == "unauthorized"
    for key in (KEY, OTHER):
        assert key not in response.text
    return body


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {KEY}"},
        {"Authorization": f"bearer   {OTHER}"},
        {"X-API-Key": KEY},
        {"X-API-Key": f" {OTHER} "},
        {"Authorization": "Basic dXNlcjpwYXNz", "X-API-Key": KEY},  # a proxy's own auth
        {"Authorization": f"Bearer {KEY}", "X-API-Key": "stale-key-000000000"},
    ],
    ids=["bearer", "bearer-lowercase", "x-api-key", "x-api-key-padded", "basic-and-key", "either"],
)
async def test_right_key_passes(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    # Past the key check: the body is then found invalid, which only the route can say.
    response = await client.post("/prompt", json={}, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_request"


@pytest.mark.parametrize(
    ("headers", "wrong"),
    [
        ({}, False),
        ({"Authorization": "Bearer "}, False),
        ({"Authorization": f"Basic {KEY}"}, False),
        ({"Authorization": f"Token {KEY}"}, False),
        ({"X-API-Key": ""}, False),
        ({"Authorization": "Bearer wrong-key-0123456789"}, True),
        ({"X-API-Key": KEY[:-1]}, True),
        ({"Authorization": f"Bearer {KEY}x"}, True),
    ],
    ids=["none", "empty-bearer", "basic", "token-scheme", "empty-x-api-key", "wrong-bearer",
         "truncated", "extended"],
)  # fmt: skip
async def test_missing_or_wrong_key_is_401(
    client: httpx.AsyncClient, headers: dict[str, str], wrong: bool
) -> None:
    body = assert_401(await client.post("/prompt", json={"prompt": {}}, headers=headers))
    if wrong:
        assert body["error"] == "the API key is not valid"
        assert body["location"] in {"headers.Authorization", "headers.X-API-Key"}
    else:
        assert "Authorization: Bearer <key>" in body["error"]
        assert "X-API-Key" in body["error"]


@pytest.mark.parametrize(
    ("headers", "challenge"),
    [
        ({}, 'Bearer realm="comfy-gateway"'),
        (
            {"X-API-Key": "wrong-key-0123456789"},
            'Bearer realm="comfy-gateway", error="invalid_token"',
        ),
    ],
    ids=["missing", "wrong"],
)
async def test_challenge_says_bearer(
    client: httpx.AsyncClient, headers: dict[str, str], challenge: str
) -> None:
    response = await client.get("/models", headers=headers)
    assert_401(response)
    assert response.headers["www-authenticate"] == challenge


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/models"), ("GET", "/workflows"), ("GET", "/prompt/some-id"),
     ("GET", "/prompt/some-id/events"), ("POST", "/interrupt"), ("GET", "/no/such/route"),
     ("POST", "/workflows/sd15/txt2img"), ("GET", "/added-later"), ("OPTIONS", "/prompt"),
     ("GET", "/health/"), ("GET", "/metrics/../prompt"), ("GET", "/docs/../models")],
)  # fmt: skip
async def test_everything_else_needs_a_key(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    assert_401(await client.request(method, path))


@pytest.mark.parametrize(
    "path",
    [*sorted(OPEN_PATHS), "/docs/static/swagger-ui.css"],
)
async def test_probes_metrics_and_docs_are_open(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code != 401
    # the probes answer 503 here only because this app's gateway was never started
    assert response.status_code in (200, 503), (path, response.status_code)


async def websocket(
    app: FastAPI, headers: dict[str, str], *, denial_extension: bool = True
) -> list[Message]:
    """Open /added-ws as a server would, and return what the app sent."""
    scope = {
        "type": "websocket", "asgi": {"version": "3.0"}, "scheme": "ws", "path": "/added-ws",
        "raw_path": b"/added-ws", "root_path": "", "query_string": b"", "client": ("127.0.0.1", 9),
        "server": ("gateway", 80), "subprotocols": [],
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "extensions": {"websocket.http.response": {}} if denial_extension else {},
    }  # fmt: skip
    inbox: list[Message] = [{"type": "websocket.connect"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return inbox.pop(0) if inbox else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_websocket_without_a_key_is_refused_with_a_401(app: FastAPI) -> None:
    sent = await websocket(app, {})
    assert sent[0]["type"] == "websocket.http.response.start"
    assert sent[0]["status"] == 401
    assert b'"code":"unauthorized"' in b"".join(m.get("body", b"") for m in sent[1:])
    assert all(m["type"] != "websocket.accept" for m in sent)


async def test_websocket_without_the_denial_extension_is_closed(app: FastAPI) -> None:
    sent = await websocket(app, {"X-API-Key": "wrong-key-0123456789"}, denial_extension=False)
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "unauthorized"}]


async def test_websocket_with_a_key_is_accepted(app: FastAPI) -> None:
    sent = await websocket(app, {"Authorization": f"Bearer {KEY}"})
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == "hello"


async def test_keys_are_never_logged(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        await client.post("/prompt", json={}, headers={"Authorization": f"Bearer {KEY}"})
        await client.post("/prompt", json={}, headers={"X-API-Key": OTHER + "x"})
        create_app(load_settings(api_keys=f"{KEY},{OTHER}"))
    assert caplog.records, "expected some log lines to check"
    for key in (KEY, OTHER):
        assert key not in caplog.text


# --- the OpenAPI document --------------------------------------------------------------------


async def test_docs_declare_both_key_headers(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["bearer"]["description"],
    }
    assert (schemes["apiKey"]["in"], schemes["apiKey"]["name"]) == ("header", "X-API-Key")
    prompt = spec["paths"]["/prompt"]["post"]
    assert prompt["security"] == [{"bearer": []}, {"apiKey": []}]  # either one
    assert "401" in prompt["responses"]
    for open_path in ("/health", "/ready", "/metrics"):
        assert "security" not in spec["paths"][open_path]["get"]


async def test_swagger_ui_page_is_served_open(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert "openapi.json" in page.text


def test_docs_without_keys_have_no_security() -> None:
    spec = create_app(load_settings()).openapi()
    assert "securitySchemes" not in spec.get("components", {})
    assert "security" not in spec["paths"]["/prompt"]["post"]


async def test_an_api_key_does_not_open_the_fleets_files_endpoint(
    client: httpx.AsyncClient,
) -> None:
    """It wants the fleet's secret instead (app.routes.fleet_files), and is not in /docs."""
    for headers in ({}, {"Authorization": f"Bearer {KEY}"}, {"X-Fleet-Secret": KEY}):
        refused = await client.get("/internal/fleet/files/some-token", headers=headers)
        assert refused.status_code == 401 and "fleet's secret" in refused.json()["error"]
    schema = await client.get("/openapi.json")
    assert "/internal/" not in schema.text
