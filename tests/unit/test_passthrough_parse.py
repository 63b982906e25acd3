"""The passthrough reads a request once, as ComfyUI's aiohttp does, and sends on what it read:
app.compat.comfy.parse, and what a real aiohttp server (ComfyUI's) reads of it."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from yarl import URL

from app.compat.comfy.parse import (
    parse_query,
    path_parts,
    plain_folder,
    plain_name,
    target,
    view_file,
)
from app.core.errors import InvalidRequest
from app.core.keys import key_folder, key_id
from app.core.settings import load_settings
from app.main import create_app
from tests.gateway_process import free_port

KEY = "k" * 32


def tiny_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4)).save(out, "PNG")
    return out.getvalue()


PNG = tiny_png()
SEGMENTS = st.text(min_size=1).filter(lambda part: part not in (".", ".."))
OWN = key_folder(key_id(KEY, None))


@given(st.dictionaries(st.text(), st.text(), max_size=5), st.lists(SEGMENTS, max_size=3))
def test_what_goes_on_is_what_aiohttp_reads(params: dict[str, str], parts: list[str]) -> None:
    url = URL("http://comfyui" + target(("view", *parts), params), encoded=True)
    assert dict(url.query) == params and len(url.query) == len(params)
    assert path_parts(url.raw_path.encode()) == ("view", *parts)
    assert parse_query(url.raw_query_string.encode()) == params


@pytest.mark.parametrize(
    ("raw", "location"),
    [
        (b"filename=a.png&filename=b.png", "filename"),
        (b"type=output&type=input", "type"),
        (b"filename=%zz", "filename"),
        (b"filename=%ff.png", "filename"),
        (b"%ff=1", "query"),
    ],
)
def test_an_ambiguous_query_is_a_located_400(raw: bytes, location: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_query(raw)
    assert refused.value.location == location


def test_a_query_is_read_as_aiohttp_reads_it() -> None:
    raw = b"filename=a+b%2Bc.png&&subfolder=x%2Fy&preview"
    assert parse_query(raw) == {"filename": "a b+c.png", "subfolder": "x/y", "preview": ""}
    assert parse_query(raw) == dict(URL(f"http://x/view?{raw.decode()}", encoded=True).query)


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "a/b.png", "a\\b.png", 'q"x.png', "t\x7f.png", "x.png [output]",
     "x.png[temp]", "x [input]", "é" * 200],
)  # fmt: skip
def test_names_a_header_or_a_path_would_read_otherwise_are_refused(name: str) -> None:
    with pytest.raises(InvalidRequest):
        plain_name(name, "image")


@pytest.mark.parametrize("name", ["фото (1).png", "a b.png", "x [output].png", "..x", "%41.png"])
def test_plain_names_pass(name: str) -> None:
    assert plain_name(name, "image") == name


@pytest.mark.parametrize("folder", ["..", "a/../b", "/tmp", "a//b", "./a", "a\\b", "a/"])
def test_folders_that_leave_theirs_are_refused(folder: str) -> None:
    with pytest.raises(InvalidRequest):
        plain_folder(folder, "subfolder")


def test_view_names_a_file_as_comfyui_does() -> None:
    assert view_file({"filename": "a.png"}) == ("output", "", "a.png")
    assert view_file({"filename": "a.png", "type": "temp", "subfolder": "s/t"}) == (
        "temp", "s/t", "a.png",
    )  # fmt: skip
    for bad, location in [
        ({}, "filename"),
        ({"filename": "a.png", "type": ""}, "type"),
        ({"filename": "a.png", "type": "models"}, "type"),
        ({"filename": "a.png [output]", "type": "input"}, "filename"),
        ({"filename": "../output/a.png", "type": "input"}, "filename"),
    ]:
        with pytest.raises(InvalidRequest) as refused:
            view_file(bad)
        assert refused.value.location == location


# --- what a real aiohttp server (ComfyUI's) reads of what the passthrough sends -----------------


@pytest.fixture
async def comfyui() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A small aiohttp server that reads requests as ComfyUI's handlers do."""
    seen: list[dict[str, Any]] = []

    async def view(request: web.Request) -> web.Response:
        seen.append({"query": [(k, v) for k, v in request.rel_url.query.items()]})
        return web.json_response({})

    async def upload(request: web.Request) -> web.Response:
        post = await request.post()
        fields = {k: (v.filename, v.file.read()) if hasattr(v, "file") else v
                  for k, v in post.items()}  # fmt: skip
        seen.append({"post": fields, "names": list(post.keys())})
        return web.json_response({"name": "x", "subfolder": "", "type": "input"})

    async def prompt(request: web.Request) -> web.Response:
        seen.append({"json": await request.json()})
        return web.json_response({"prompt_id": "x", "number": 1, "node_errors": {}})

    async def empty(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/view", view)
    app.router.add_post("/upload/image", upload)
    app.router.add_post("/upload/mask", upload)
    app.router.add_post("/prompt", prompt)
    app.router.add_get("/history/{id}", empty)
    app.router.add_get("/queue", empty)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


@pytest.fixture
async def gateway(
    tmp_path: Path, comfyui: tuple[str, list[dict[str, Any]]]
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        load_settings(workflow_dir=tmp_path, comfyui_port_host=free_port(), api_keys=KEY)
    )
    state = app.state.gateway
    state.pool.first.process.proc = SimpleNamespace(returncode=None)  # as if ComfyUI ran
    state.comfy.http = httpx.AsyncClient(base_url=comfyui[0])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    headers = {"X-API-Key": KEY}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://gateway", headers=headers
    ) as client:
        yield client
    await state.comfy.http.aclose()


async def test_comfyui_reads_the_upload_that_was_checked(
    gateway: httpx.AsyncClient, comfyui: tuple[str, list[dict[str, Any]]]
) -> None:
    own = OWN
    files = [
        ("image", ("фото (1).png", PNG, "image/png")),
        ("subfolder", (None, b"album")),
        ("overwrite", (None, b"true")),
        ("extra", (None, b"dropped")),
    ]
    answer = await gateway.post("/comfy/upload/image", files=files)
    assert answer.status_code == 200, answer.text
    (seen,) = comfyui[1]
    assert seen["post"] == {
        "subfolder": f"{own}/album",
        "type": "input",
        "overwrite": "true",
        "image": ("фото (1).png", PNG),
    }
    ref = {"filename": "фото (1).png", "subfolder": f"{own}/album", "type": "input"}
    mask = [("image", ("m.png", PNG, "image/png")),
            ("original_ref", (None, json.dumps(ref).encode()))]  # fmt: skip
    assert (await gateway.post("/comfy/upload/mask", files=mask)).status_code == 200
    assert json.loads(comfyui[1][1]["post"]["original_ref"]) == ref


async def test_comfyui_reads_the_query_and_the_body_that_were_checked(
    gateway: httpx.AsyncClient, comfyui: tuple[str, list[dict[str, Any]]]
) -> None:
    mine, theirs = "0f9d8c61-6a0e-4c4e-9d54-3a5e3b6c2f10", "7b1e2f33-1c4d-4f0e-8a2b-5d6c7e8f9a01"
    # Duplicate keys: json (and aiohttp) keep the last; what goes on has only that one.
    body = f'{{"prompt": {{}}, "prompt_id": "{theirs}", "prompt_id": "{mine}"}}'
    answer = await gateway.post("/comfy/prompt", content=body)
    assert answer.status_code == 200, answer.text
    assert comfyui[1][-1] == {"json": {"prompt": {}, "prompt_id": mine}}
    subfolder = OWN
    query = f"filename=a+b%2Bc.png&type=input&subfolder={subfolder}&preview=webp%3B90"
    assert (await gateway.get(f"/comfy/view?{query}")).status_code == 200
    assert comfyui[1][-1] == {
        "query": [("filename", "a b+c.png"), ("type", "input"), ("subfolder", subfolder),
                  ("preview", "webp;90")],
    }  # fmt: skip
