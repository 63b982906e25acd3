"""CORS_ALLOW_ORIGINS: settings, preflights before the key check, headers on every answer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from app.core.settings import SettingsError, load_settings
from app.main import create_app

KEY = "k3y-0123456789abcdef"
ALLOWED = "https://app.example.com"
REFUSED = "https://evil.example.net"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", ()),
        (ALLOWED, (ALLOWED,)),
        (f" {ALLOWED} , http://localhost:5173 ,", (ALLOWED, "http://localhost:5173")),
        ("HTTPS://App.Example.COM", (ALLOWED,)),
        ("https://app.example.com:443,http://x.test:80", (ALLOWED, "http://x.test")),
        ("https://app.example.com:8443", ("https://app.example.com:8443",)),
        ("http://[::1]:8080", ("http://[::1]:8080",)),
        (f"{ALLOWED},{ALLOWED}", (ALLOWED,)),
        (f"{ALLOWED},*", ("*",)),
    ],
    ids=["empty", "one", "list", "case", "default-ports", "port", "ipv6", "duplicate", "star"],
)
def test_origins_parsed(monkeypatch: pytest.MonkeyPatch, raw: str, expected: tuple[str]) -> None:
    monkeypatch.setenv("CORS_ALLOW_ORIGINS", raw)
    assert load_settings().cors_allow_origins == expected


@pytest.mark.parametrize(
    "raw",
    ["https://app.example.com/", "app.example.com", "https://app.example.com/path",
     "https://", "https://a b.com", "https://app.example.com:port"],
    ids=["trailing-slash", "no-scheme", "path", "no-host", "space", "bad-port"],
)  # fmt: skip
def test_bad_origin_is_named(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("CORS_ALLOW_ORIGINS", raw)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "CORS_ALLOW_ORIGINS" in str(caught.value)
    assert "scheme://host[:port]" in str(caught.value)


def app_with(**settings: str) -> FastAPI:
    return create_app(load_settings(**settings))


@pytest.fixture(scope="module")
def keyed_app() -> FastAPI:
    return app_with(api_keys=KEY, cors_allow_origins=f"{ALLOWED},http://localhost:5173")


@pytest.fixture
async def client(keyed_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=keyed_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
        yield c


def preflight(
    origin: str, method: str = "POST", headers: str = "authorization,content-type"
) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/prompt", "authorization,content-type"),
        ("/prompt", "x-api-key,content-type"),
        ("/workflows/sd15/txt2img", "authorization,content-type"),
        ("/workflow/sd15/txt2img", "x-api-key,content-type,accept"),
        ("/prompt/job-1/events", "authorization,last-event-id"),
    ],
    ids=["prompt-bearer", "prompt-x-api-key", "workflow", "workflow-alias", "events"],
)
async def test_preflight_from_an_allowed_origin_needs_no_key(
    client: httpx.AsyncClient, path: str, headers: str
) -> None:
    response = await client.options(path, headers=preflight(ALLOWED, headers=headers))
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in response.headers["access-control-allow-methods"]
    listed = response.headers["access-control-allow-headers"].split(",")
    allowed = {h.strip().lower() for h in listed}
    assert set(headers.split(",")) <= allowed
    assert response.headers["access-control-allow-credentials"] == "true"
    assert int(response.headers["access-control-max-age"]) > 0
    assert "origin" in response.headers["vary"].lower()


@pytest.mark.parametrize(
    "headers",
    [preflight(REFUSED), preflight(ALLOWED, method="DELETE"), preflight(ALLOWED, headers="x-evil")],
    ids=["origin", "method", "header"],
)
async def test_preflight_refused(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    response = await client.options("/prompt", headers=headers)
    assert response.status_code == 400
    if headers["Origin"] == REFUSED:
        assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(
    ("origin", "tagged"), [(ALLOWED, True), ("http://localhost:5173", True), (REFUSED, False)]
)
@pytest.mark.parametrize("key", [True, False], ids=["with-key", "without-key"])
async def test_answers_carry_cors_headers_for_allowed_origins_only(
    client: httpx.AsyncClient, origin: str, tagged: bool, key: bool
) -> None:
    headers = {"Origin": origin} | ({"X-API-Key": KEY} if key else {})
    response = await client.post("/prompt", json={}, headers=headers)
    # with the key, the route's own 400; without, the key check's 401: both readable by the app
    assert response.status_code == (400 if key else 401)
    assert response.headers.get("access-control-allow-origin") == (origin if tagged else None)
    if tagged:
        exposed = response.headers["access-control-expose-headers"].lower()
        assert "retry-after" in exposed
        assert "www-authenticate" in exposed


async def test_star_allows_any_origin_without_credentials() -> None:
    app = app_with(cors_allow_origins="*")
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
        response = await c.options("/prompt", headers=preflight(REFUSED))
        simple = await c.get("/health", headers={"Origin": REFUSED})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers
    assert simple.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("keys", [KEY, ""], ids=["keys", "no-keys"])
async def test_no_origins_means_no_cors(keys: str) -> None:
    app = app_with(api_keys=keys)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
        response = await c.options("/prompt", headers=preflight(ALLOWED))
        simple = await c.get("/health", headers={"Origin": ALLOWED})
    assert response.status_code == (401 if keys else 405)
    assert not any(h.startswith("access-control-") for h in response.headers)
    assert not any(h.startswith("access-control-") for h in simple.headers)
