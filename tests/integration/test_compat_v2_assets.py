"""The Comfy API v2's assets, differentially against comfy-api-proxy 0.1.6 (see test_compat_v2):
upload, dedup by blake3, from-hash, by-hash, content with Range, delete, and core/ASSET
references in a workflow."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from typing import Any

import blake3
import pytest
from PIL import Image

from tests.integration.harness import Gateway, graph
from tests.integration.test_compat_v2 import pixel, submit
from tests.integration.test_prompt import empty_image
from tests.integration.v2_pair import Pair, paired, poll


@pytest.fixture(scope="module")
def pair(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with paired(gateway, tmp_path_factory.mktemp("proxy")) as both:
        yield both


def png_bytes(color: tuple[int, int, int], size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, "PNG")
    return buffer.getvalue()


def upload(pair: Pair, data: bytes, file_path: str, **fields: str) -> tuple[Any, Any]:
    files = {"file": ("upload.png", data, "image/png")}
    return pair.both("POST", "/api/v2/assets", files=files, data={"file_path": file_path, **fields})


def test_an_upload_is_an_asset_by_id_and_by_hash(pair: Pair) -> None:
    data = png_bytes((10, 20, 30))
    digest = "blake3:" + blake3.blake3(data).hexdigest()
    name = f"v2asset-{uuid.uuid4().hex[:8]}.png"
    proxy, gateway = upload(pair, data, name)
    assert proxy.status_code == gateway.status_code == 201, (proxy.text, gateway.text)
    pair.same_shape(proxy.json(), gateway.json())
    for key, value in {"hash": digest, "size_bytes": len(data), "content_type": "image/png",
                       "file_path": name, "created_new": True}.items():  # fmt: skip
        assert proxy.json()[key] == gateway.json()[key] == value, key
    ids = proxy.json()["id"], gateway.json()["id"]

    # the same bytes again, under another name: the same asset
    again = upload(pair, data, f"other-{name}")
    assert again[0].status_code == again[1].status_code == 200
    assert [a.json()["id"] for a in again] == list(ids)
    assert again[0].json()["created_new"] is again[1].json()["created_new"] is False

    hashed = pair.both("POST", "/api/v2/assets/from-hash", json={"hash": digest})
    assert hashed[0].status_code == hashed[1].status_code == 200
    pair.same_shape(hashed[0].json(), hashed[1].json())
    heads = pair.both("HEAD", f"/api/v2/assets/by-hash/{digest}")
    assert heads[0].status_code == heads[1].status_code == 200
    assert heads[0].content == heads[1].content == b""

    got = [c.get(f"/api/v2/assets/{i}") for c, i in zip(pair.clients, ids, strict=True)]
    assert got[0].status_code == got[1].status_code == 200
    pair.same_shape(got[0].json(), got[1].json())
    assert "created_new" not in got[1].json()

    contents = [c.get(r.json()["url"]) for c, r in zip(pair.clients, got, strict=True)]
    assert [r.status_code for r in contents] == [200, 200]
    assert contents[0].content == contents[1].content == data
    assert contents[1].headers["content-type"] == "image/png"
    ranged = [
        c.get(r.json()["url"], headers={"Range": "bytes=2-5"})
        for c, r in zip(pair.clients, got, strict=True)
    ]
    assert [r.status_code for r in ranged] == [206, 206]
    assert ranged[0].content == ranged[1].content == data[2:6]
    assert ranged[0].headers["content-range"] == ranged[1].headers["content-range"]

    # delete: the record goes; the same bytes then mint a new asset
    gone = [c.delete(f"/api/v2/assets/{i}") for c, i in zip(pair.clients, ids, strict=True)]
    assert [r.status_code for r in gone] == [204, 204]
    missing = [c.get(f"/api/v2/assets/{i}") for c, i in zip(pair.clients, ids, strict=True)]
    pair.same_error(*missing, 404, "not_found")
    anew = upload(pair, data, name)
    assert anew[0].status_code == anew[1].status_code == 201
    assert anew[1].json()["id"] != ids[1]


@pytest.mark.parametrize(
    ("file_path", "fields", "status", "code"),
    [
        ("../escape.png", {}, 422, "invalid_request"),
        ("/abs.png", {}, 422, "invalid_request"),
        ("bogus/x.png", {}, 422, "invalid_request"),
        ("checkpoints/x.safetensors", {}, 422, "invalid_request"),  # no model placement
        ("ok.png", {"expected_hash": "blake3:" + "0" * 64}, 409, "hash_mismatch"),
    ],
)
def test_uploads_refused_alike(
    pair: Pair, file_path: str, fields: dict[str, str], status: int, code: str
) -> None:
    data = png_bytes((uuid.uuid4().int % 256, 1, 2))
    pair.same_error(*upload(pair, data, file_path, **fields), status, code)


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("POST", "/api/v2/assets", {"json": {"file_path": "x.png"}}, 422, "invalid_request"),
        ("POST", "/api/v2/assets", {"files": {"other": ("a", b"x")}}, 422, "invalid_request"),
        ("POST", "/api/v2/assets", {"files": {"file": ("a.png", b"x")}}, 422, "invalid_request"),
        ("POST", "/api/v2/assets/from-hash", {"content": b"{nope"}, 400, "invalid_request"),
        ("POST", "/api/v2/assets/from-hash", {"json": {"h": 1}}, 422, "invalid_request"),
        ("POST", "/api/v2/assets/from-hash", {"json": {"hash": "blake3:00"}}, 404,
         "blob_not_found"),
        ("POST", "/api/v2/assets/from-path", {"json": {"path": "/etc/hosts"}}, 422,
         "invalid_request"),
        ("GET", "/api/v2/assets/no-such-asset", {}, 404, "not_found"),
        ("GET", "/api/v2/assets/no-such-asset/content", {}, 404, "not_found"),
        ("DELETE", "/api/v2/assets/no-such-asset", {}, 404, "not_found"),
        ("GET", "/api/v2/assets/by-hash/blake3:00", {}, 405, "method_not_allowed"),
    ],
)  # fmt: skip
def test_asset_requests_refused_alike(
    pair: Pair, method: str, path: str, kwargs: dict[str, Any], status: int, code: str
) -> None:
    pair.same_error(*pair.both(method, path, **kwargs), status, code)


def test_an_unknown_hash_is_not_there(pair: Pair) -> None:
    heads = pair.both("HEAD", "/api/v2/assets/by-hash/blake3:" + "f" * 64)
    assert heads[0].status_code == heads[1].status_code == 404


def test_a_workflow_loads_an_uploaded_asset_by_reference(pair: Pair) -> None:
    data = png_bytes((200, 100, 50), size=32)
    proxy, gateway = upload(pair, data, f"input/v2ref/{uuid.uuid4().hex[:8]}.png")
    assert proxy.status_code == gateway.status_code == 201
    ids = []
    for client, asset in zip(pair.clients, (proxy, gateway), strict=True):
        workflow = graph("g2_load_scale_invert_save")
        reference = {"__type": "core/ASSET", "info": {"id": asset.json()["id"]}}
        workflow["1"]["inputs"]["image"] = reference
        answer = client.post("/api/v2/jobs", json={"workflow": workflow})
        assert answer.status_code == 201, answer.text
        ids.append(answer.json()["id"])
    finals = [poll(c, i)[0] for c, i in zip(pair.clients, ids, strict=True)]
    assert [f["status"] for f in finals] == ["succeeded", "succeeded"]
    flows = [
        c.get(f"/api/v2/jobs/{i}/workflow").json() for c, i in zip(pair.clients, ids, strict=True)
    ]
    resolved = [flow["workflow"]["1"]["inputs"]["image"] for flow in flows]
    assert all(name.startswith("v2ref/") for name in resolved), resolved
    got = pair.gateway.get(finals[1]["outputs"][0]["url"])
    assert max(abs(a - b) for a, b in zip(pixel(got.content), (55, 155, 205), strict=True)) <= 2


def test_an_output_id_as_input_runs_on_that_output(pair: Pair) -> None:
    first = submit(pair, empty_image(0x102030, width=16, height=16, prefix="v2out"))
    outputs = [poll(c, i)[0]["outputs"][0]["id"] for c, i in zip(pair.clients, first, strict=True)]
    answers = []
    for client, output_id in zip(pair.clients, outputs, strict=True):
        workflow = graph("g2_load_scale_invert_save")
        workflow["1"]["inputs"]["image"] = {"__type": "core/ASSET", "info": {"id": output_id}}
        answers.append(client.post("/api/v2/jobs", json={"workflow": workflow}))
    # The proxy passes the output's file name, which ComfyUI looks for in its input folder.
    assert answers[0].status_code == 422
    assert answers[0].json()["error"]["code"] == "invalid_workflow"
    assert answers[1].status_code == 201, answers[1].text
    final, _ = poll(pair.gateway, answers[1].json()["id"])
    assert final["status"] == "succeeded"
    got = pair.gateway.get(final["outputs"][0]["url"])
    assert max(abs(a - b) for a, b in zip(pixel(got.content), (0xEF, 0xDF, 0xCF), strict=True)) <= 2
    pair.seen.add("output as input")
