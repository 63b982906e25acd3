"""/console in the real app (no ComfyUI: the app's lifespan is not run): the page and its files
are open and forbid framing and inline script; its data needs an admin key while keys are on
(401 without one, 403 with a tenant's); CONSOLE_ENABLED=false leaves every path a 404."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from app.console.state import FINISHED_SHOWN
from app.core.settings import load_settings
from app.main import create_app

TENANT = "tenant-key-0123456789abcdef"
ADMIN = "admin-key-0123456789abcdef"
PAGE_PATHS = ["/console", "/console/console.js", "/console/console.css"]
DATA_PATHS = ["/console/state.json", "/console/jobs/some-job/thumbnail"]


async def client_of(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
        yield c


@pytest.fixture(scope="module")
def keyed_app() -> FastAPI:
    return create_app(load_settings(api_keys=f"tenant:{TENANT}", admin_api_keys=f"ops:{ADMIN}"))


@pytest.fixture
async def keyed(keyed_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async for c in client_of(keyed_app):
        yield c


@pytest.mark.parametrize("path", PAGE_PATHS)
async def test_the_page_and_its_files_are_open_and_forbid_framing_and_inline_script(
    keyed: httpx.AsyncClient, path: str
) -> None:
    response = await keyed.get(path)
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_the_page_names_its_files_and_holds_no_inline_script(
    keyed: httpx.AsyncClient,
) -> None:
    page = (await keyed.get("/console")).text
    assert '<script src="/console/console.js" defer></script>' in page
    assert "<script>" not in page
    assert re.search(r"\son\w+\s*=", page) is None  # no inline event handler either
    assert (
        (await keyed.get("/console/console.js"))
        .headers["content-type"]
        .startswith("text/javascript")
    )


@pytest.mark.parametrize("path", DATA_PATHS)
async def test_the_data_needs_a_key(keyed: httpx.AsyncClient, path: str) -> None:
    response = await keyed.get(path)
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


@pytest.mark.parametrize("path", DATA_PATHS)
async def test_a_tenants_key_gets_a_403_naming_the_admin_keys(
    keyed: httpx.AsyncClient, path: str
) -> None:
    response = await keyed.get(path, headers={"X-API-Key": TENANT})
    assert response.status_code == 403
    body = response.json()
    assert body["code"] == "forbidden" and "ADMIN_API_KEYS" in body["error"]


async def test_an_admin_key_reads_the_state(keyed: httpx.AsyncClient) -> None:
    response = await keyed.get("/console/state.json", headers={"X-API-Key": ADMIN})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    state = response.json()
    assert state["started"] is False  # no lifespan: nothing started
    assert [i["index"] for i in state["instances"]] == [0]
    assert state["instances"][0]["rss_mb"] is None  # its ComfyUI is not running
    assert state["queue"] == state["running"] == state["finished"] == state["peers"] == []
    assert state["models"]["models"] == []
    assert FINISHED_SHOWN <= 50  # a page that lists hundreds would be slow to draw


async def test_an_admin_asking_for_an_unknown_jobs_thumbnail_gets_a_404(
    keyed: httpx.AsyncClient,
) -> None:
    response = await keyed.get("/console/jobs/nope/thumbnail", headers={"X-API-Key": ADMIN})
    assert response.status_code == 404
    assert response.json()["location"] == "id"


async def test_without_keys_whoever_reaches_the_port_reads_the_state() -> None:
    async for c in client_of(create_app(load_settings())):
        assert (await c.get("/console/state.json")).status_code == 200


async def test_console_enabled_false_leaves_every_path_a_404() -> None:
    async for c in client_of(create_app(load_settings(console_enabled=False))):
        for path in PAGE_PATHS + DATA_PATHS:
            assert (await c.get(path)).status_code == 404, path
