"""A tenant's files are decided on exactly what ComfyUI reads (issue 20, class 2): through the
passthrough's /view, uploads and masks, in a graph's file names on /prompt and every facade, and
in ComfyUI's listings, key bob never reads key alice's outputs or uploads.

The tenants' gateway (conftest's `tenant_gateway`: keys alice, bob, admin).
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.integration.harness import Gateway, assert_capacity_whole, eventually
from tests.integration.tenants import leave_comfyui_idle
from tests.integration.test_prompt import empty_image


@pytest.fixture(scope="module")
def gateway(tenant_gateway: Gateway) -> Gateway:
    return tenant_gateway


@pytest.fixture(autouse=True)
def idle_comfyui(gateway: Gateway) -> Iterator[None]:
    yield
    leave_comfyui_idle(gateway)


def png(color: tuple[int, int, int], size: int = 16) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, "PNG")
    return out.getvalue()


def an_output(c: httpx.Client, color: int) -> dict[str, str]:
    """A file one of the key's passthrough prompts made: its /view query."""
    prefix = f"scope-{uuid.uuid4().hex[:6]}"
    answer = c.post("/comfy/prompt", json={"prompt": empty_image(color, prefix=prefix)})
    assert answer.status_code == 200, answer.text
    prompt_id = answer.json()["prompt_id"]
    eventually(lambda: prompt_id in c.get(f"/comfy/history/{prompt_id}").json())
    outputs = c.get(f"/comfy/history/{prompt_id}").json()[prompt_id]["outputs"]
    image = next(iter(outputs.values()))["images"][0]
    return {k: image[k] for k in ("filename", "subfolder", "type")}


def upload(c: httpx.Client, name: str, data: bytes, **fields: str) -> httpx.Response:
    return c.post("/comfy/upload/image", files={"image": (name, data, "image/png")}, data=fields)


def assert_bad_request(response: httpx.Response, location: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert (body["code"], body.get("location")) == ("invalid_request", location), body


def loads_and_saves(name: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": name}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "s"}},
    }


def test_view_checks_the_file_comfyui_serves(
    gateway: Gateway, alice: httpx.Client, bob: httpx.Client
) -> None:
    hers = an_output(alice, 0x112233)
    mine = upload(bob, "bobs.png", png((1, 2, 3))).json()
    # ComfyUI serves the first of repeated parameters: alice's output, were this let through.
    repeated = (
        f"filename={hers['filename']}&subfolder={hers['subfolder']}&type=output"
        f"&filename={mine['name']}&subfolder={mine['subfolder']}&type=input"
    )
    assert_bad_request(bob.get(f"/comfy/view?{repeated}"), "filename")
    annotated = {"filename": f"{hers['filename']} [output]", "type": "input"}
    for query, location in [
        (annotated, "filename"),
        ({**annotated, "subfolder": mine["subfolder"]}, "filename"),
        ({"filename": f"../output/{hers['filename']}", "type": "input"}, "filename"),
        ({"filename": hers["filename"], "subfolder": "..", "type": "output"}, "subfolder"),
        ({"filename": hers["filename"], "type": "other"}, "type"),
    ]:
        assert_bad_request(bob.get("/comfy/view", params=query), location)
    assert_bad_request(bob.get("/comfy/view?filename=%ff.png"), "filename")
    assert_bad_request(bob.get("/comfy/view?filename=%zz.png"), "filename")
    # Each key reads its own, in the parsed form the gateway sends on.
    assert bob.get("/comfy/view", params={**hers}).status_code == 404
    assert alice.get("/comfy/view", params=hers).status_code == 200
    own = {"filename": mine["name"], "subfolder": mine["subfolder"], "type": "input"}
    assert bob.get("/comfy/view", params=own).content == png((1, 2, 3))
    assert alice.get("/comfy/view", params=own).status_code == 404
    assert_capacity_whole(gateway, bob)


def test_uploads_go_to_the_keys_own_folder(
    gateway: Gateway, alice: httpx.Client, bob: httpx.Client
) -> None:
    name = f"secret-{uuid.uuid4().hex[:6]}.png"
    stored = upload(alice, name, png((9, 8, 7)), subfolder="album", overwrite="true")
    assert stored.status_code == 200, stored.text
    folder = stored.json()["subfolder"]
    assert folder.startswith("gw-key-") and folder.endswith("/album")
    assert stored.json() == {"name": name, "subfolder": folder, "type": "input"}
    assert (gateway.input_dir / folder / name).read_bytes() == png((9, 8, 7))
    # ComfyUI's lists of input files (LoadImage's) show no key's upload, nor its folders (the
    # dataset nodes list every folder of the input folder) but to the key itself.
    listed = bob.get("/comfy/object_info/LoadImage").json()["LoadImage"]["input"]["required"]
    assert name not in json.dumps(listed)
    assert folder not in bob.get("/comfy/object_info").text
    assert folder in alice.get("/comfy/object_info").text
    assert "in64.png" in bob.get("/comfy/object_info/LoadImage").text  # shared files are listed
    again = upload(alice, name, png((9, 8, 7)), subfolder=folder)  # as its answer named it
    assert again.json()["subfolder"] == folder

    for response, location in [
        (upload(bob, "x.png", png((0, 0, 0)), type="output"), "type"),
        (upload(bob, "x.png", png((0, 0, 0)), type="temp"), "type"),
        (upload(bob, "x.png [output]", png((0, 0, 0))), "image"),
        (upload(bob, "../x.png", png((0, 0, 0))), "image"),
        (upload(bob, "x.png", png((0, 0, 0)), subfolder="../output"), "subfolder"),
        (upload(bob, "x.png", png((0, 0, 0)), subfolder="/tmp"), "subfolder"),
        (
            bob.post(
                "/comfy/upload/image",
                files=[
                    ("image", ("x.png", png((0, 0, 0)), "image/png")),
                    ("subfolder", (None, b"a")),
                    ("subfolder", (None, b"b")),  # ComfyUI would read the first
                ],
            ),
            "subfolder",
        ),
    ]:
        assert_bad_request(response, location)
    assert not (gateway.output_dir / "x.png").exists()
    assert_capacity_whole(gateway, bob)


@pytest.mark.parametrize("way", ["prompt", "passthrough", "v1", "workflow", "v2"])
def test_a_graph_names_only_input_files_the_key_may_read(
    gateway: Gateway, alice: httpx.Client, bob: httpx.Client, way: str
) -> None:
    hers = an_output(alice, 0x445566)
    upload_name = f"hers-{uuid.uuid4().hex[:6]}.png"
    uploaded = upload(alice, upload_name, png((4, 5, 6))).json()
    history = httpx.get(f"{gateway.comfy_url}/history", timeout=10).json()
    for name in (
        f"{hers['filename']} [output]",  # ComfyUI would read alice's output
        f"{uploaded['subfolder']}/{upload_name}",  # alice's upload, by its folder
        f"../output/{hers['filename']}",
        f"/{hers['filename']}",
    ):
        answer = submit(bob, way, name)
        assert answer.status_code == (422 if way == "v2" else 400), answer.text  # v2's envelope
        assert "inputs.image" in answer.text
    assert httpx.get(f"{gateway.comfy_url}/history", timeout=10).json().keys() == history.keys()
    # Her own upload is hers to load; a shared file at the top of the input folder is anyone's.
    # (Bob sends nothing that runs: test_tenants_facades expects /api/v1 to have none of his.)
    assert submit(alice, way, f"{uploaded['subfolder']}/{upload_name}").status_code in (200, 201)
    assert submit(alice, way, "in64.png").status_code in (200, 201)
    assert_capacity_whole(gateway, bob)


def submit(c: httpx.Client, way: str, name: str) -> httpx.Response:
    """A job loading the input file `name`, through one way in."""
    graph = loads_and_saves(name)
    if way == "prompt":
        return c.post("/prompt", json={"prompt": graph})
    if way == "passthrough":
        return c.post("/comfy/prompt", json={"prompt": graph})
    if way == "v1":
        return c.post("/api/v1/prompts", json=graph)
    if way == "v2":
        return c.post("/api/v2/jobs", json={"workflow": graph})
    body = {"input": {"image": name, "prompt": "x", "steps": 1}}
    return c.post("/workflows/sd15/img2img", json=body)


def test_a_mask_is_laid_only_on_the_keys_own_files(
    gateway: Gateway, alice: httpx.Client, bob: httpx.Client
) -> None:
    hers = an_output(alice, 0x778899)
    mask = {"image": ("mask.png", png((0, 0, 0), size=64), "image/png")}  # as large as hers
    theirs = bob.post("/comfy/upload/mask", files=mask, data={"original_ref": json.dumps(hers)})
    assert theirs.status_code == 404, theirs.text
    assert theirs.json()["location"] == "original_ref"
    annotated = {**hers, "filename": f"{hers['filename']} [output]", "type": "input"}
    refused = bob.post(
        "/comfy/upload/mask", files=mask, data={"original_ref": json.dumps(annotated)}
    )
    assert_bad_request(refused, "original_ref.filename")
    assert_bad_request(bob.post("/comfy/upload/mask", files=mask), "original_ref")
    mine = alice.post("/comfy/upload/mask", files=mask, data={"original_ref": json.dumps(hers)})
    assert mine.status_code == 200, mine.text
    assert mine.json()["subfolder"].startswith("gw-key-")
    assert_capacity_whole(gateway, bob)
