"""What one API key can reach on a real gateway and ComfyUI: the operator's credentials go only
where the operator pointed them, and the model cache every key shares cannot be spent by one.

One gateway for the module, with keys (tests.integration.tenants: alice, bob and the admin key
ops) and KEY_LIMITS that grant alice `models: download` with `max_downloads: 2` and bob nothing;
HTTP_UPLOAD_AUTH_HEADER for the operator's store only; S3_BUCKETS=renders on a real S3 (moto)
that also holds the operator's `payroll` bucket; its own MODEL_DIR (the cache, capped at 24 MiB)
with the tiny checkpoint put there by hand. Every server is on loopback (127.0.0.1, allowed by
ALLOWED_PRIVATE_NETWORKS): the operator's store and a client-named receiver on another port.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.fileserver import FileServer, Trickle
from tests.integration.harness import (
    MODELS,
    ROOT,
    Gateway,
    assert_capacity_whole,
    eventually,
    graph,
    running,
)
from tests.integration.receiver import Receiver
from tests.integration.tenants import ADMIN, ALICE, BOB, client
from tests.integration.test_prompt import empty_image
from tests.s3_server import S3Server

MIB = 2**20
CAP = 24 * MIB
UPLOAD_TOKEN = "operator-upload-token-4d1f"
TINY = MODELS / "checkpoints" / "tiny-sd15-random.safetensors"


@dataclass
class Rig:
    gateway: Gateway
    files: FileServer
    store: Receiver  # the operator's store: HTTP_UPLOAD_AUTH_PREFIXES names its /outputs/
    elsewhere: Receiver  # a store a client names: another port
    s3: Any
    models: Path


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    work = tmp_path_factory.mktemp("key-reach")
    models = work / "models"
    (models / "checkpoints").mkdir(parents=True)
    (models / "loras").mkdir()
    try:
        os.link(TINY, models / "checkpoints" / TINY.name)
    except OSError:
        shutil.copy(TINY, models / "checkpoints" / TINY.name)
    files, store, elsewhere = FileServer(), Receiver(), Receiver()
    moto = S3Server.start("renders", "payroll")
    s3 = moto.client()
    s3.put_object(Bucket="payroll", Key="salaries.safetensors", Body=b"the operator's own")
    limits = {"alice": {"models": "download", "max_downloads": 2}}
    env = {
        "API_KEYS": f"alice:{ALICE},bob:{BOB}",
        "ADMIN_API_KEYS": f"ops:{ADMIN}",
        "KEY_LIMITS": json.dumps(limits),
        "ALLOWED_PRIVATE_NETWORKS": "127.0.0.1/32",
        "HTTP_UPLOAD_AUTH_HEADER": f"Authorization: Bearer {UPLOAD_TOKEN}",
        "HTTP_UPLOAD_AUTH_PREFIXES": store.url("/outputs/"),
        "S3_BUCKETS": "renders",
        **moto.env,
        "MODEL_DIR": str(models),
        "MODEL_CACHE_MAX_GB": str(CAP / 2**30),
        "MODEL_DOWNLOAD_TIMEOUT_S": "2",
        "MODEL_DOWNLOAD_RETRIES": "1",
        "WORKFLOW_DIR": str(ROOT / "workflows"),
    }
    try:
        with running(work, **env) as gateway:
            yield Rig(gateway, files, store, elsewhere, s3, models)
        assert UPLOAD_TOKEN not in gateway.log_text()
    finally:
        for server in (files, store, elsewhere):
            server.close()
        moto.stop()


@pytest.fixture
def alice(rig: Rig) -> Iterator[httpx.Client]:
    with client(rig.gateway, ALICE) as c:
        yield c


@pytest.fixture
def bob(rig: Rig) -> Iterator[httpx.Client]:
    with client(rig.gateway, BOB) as c:
        yield c


@pytest.fixture
def admin(rig: Rig) -> Iterator[httpx.Client]:
    with client(rig.gateway, ADMIN) as c:
        yield c


def lora_graph(url: str) -> dict[str, Any]:
    prompt = graph("lora")
    prompt["10"]["inputs"]["lora_name"] = url
    return prompt


def download(c: httpx.Client, url: str, **body: Any) -> httpx.Response:
    return c.post("/models/download", json={"url": url, "folder": "loras", **body})


# -- class 4: credentials go only where the operator pointed them ------------------------------


def test_the_upload_header_goes_only_to_the_operators_store(rig: Rig, alice: httpx.Client) -> None:
    targets = {
        "operator": rig.store.url("/outputs/"),
        "same host, another path": rig.store.url("/outputs-rival/"),
        "client-named receiver": rig.elsewhere.url("/outputs/"),
    }
    stored = {}
    for color, (what, url_prefix) in enumerate(targets.items()):
        body = {"prompt": empty_image(color), "http_upload": {"url_prefix": url_prefix}}
        answer = alice.post("/prompt", json=body)
        assert answer.status_code == 200, (what, answer.text)
        [stored[what]] = answer.json()["images"]
    puts = {d.path: d for d in rig.store.records + rig.elsewhere.records}
    auth = {
        what: puts["/" + url.split("/", 3)[3]].headers.get("Authorization")
        for what, url in stored.items()
    }
    assert auth == {
        "operator": f"Bearer {UPLOAD_TOKEN}",
        "same host, another path": None,
        "client-named receiver": None,
    }


def test_the_s3_credentials_serve_only_the_listed_buckets(
    rig: Rig, alice: httpx.Client, admin: httpx.Client
) -> None:
    before = rig.s3.list_objects_v2(Bucket="payroll").get("KeyCount", 0)
    upload = alice.post("/prompt", json={"prompt": empty_image(9), "s3": {"bucket": "payroll"}})
    model = download(admin, "s3://payroll/salaries.safetensors", wait=True)
    in_graph = alice.post("/prompt", json={"prompt": lora_graph("s3://payroll/x.safetensors")})
    for answer, location in (
        (upload, "s3.bucket"), (model, "url"), (in_graph, "prompt.10.inputs.lora_name"),
    ):  # fmt: skip
        assert answer.status_code == 400, answer.text
        assert answer.json()["location"] == location
        assert "S3_BUCKETS: renders" in answer.json()["error"]
        assert_capacity_whole(rig.gateway, alice)
    assert rig.s3.list_objects_v2(Bucket="payroll").get("KeyCount", 0) == before
    assert not (rig.models / "loras" / "salaries.safetensors").exists()
    listed = alice.post("/prompt", json={"prompt": empty_image(8), "s3": {"bucket": "renders"}})
    assert listed.status_code == 200, listed.text
    assert listed.json()["images"][0].startswith("s3://renders/")


# -- class 5: the model cache every key shares ------------------------------------------------


def test_a_key_without_the_grant_cannot_download_or_pin(
    rig: Rig, alice: httpx.Client, bob: httpx.Client
) -> None:
    rig.files.files["/m/grant.safetensors"] = os.urandom(MIB)
    url = rig.files.url("/m/grant.safetensors")
    workflow = {"input": {"prompt": "x", "width": 64, "height": 64, "steps": 1, "checkpoint": url}}
    refused = [
        (download(bob, url), "url"),
        (bob.post("/prompt", json={"prompt": lora_graph(url)}), "prompt.10.inputs.lora_name"),
        (bob.post("/workflows/sd15/txt2img", json=workflow), "prompt.1.inputs.ckpt_name"),
        (download(alice, url, pin=True), "pin"),  # alice may download, not pin
    ]
    for answer, location in refused:
        assert answer.status_code == 403, answer.text
        assert (answer.json()["code"], answer.json()["location"]) == ("forbidden", location)
        assert "KEY_LIMITS" in answer.json()["error"]
        assert_capacity_whole(rig.gateway, bob)
    assert rig.files.hits["/m/grant.safetensors"] == 0  # nothing was fetched for any of them


def test_downloads_are_listed_only_to_the_keys_that_asked(
    rig: Rig, alice: httpx.Client, bob: httpx.Client, admin: httpx.Client
) -> None:
    for name in ("alices", "operators"):
        rig.files.files[f"/private/{name}.safetensors"] = os.urandom(MIB)
    mine = download(alice, rig.files.url("/private/alices.safetensors"), wait=True)
    theirs = download(admin, rig.files.url("/private/operators.safetensors"), wait=True)
    assert mine.status_code == theirs.status_code == 200, (mine.text, theirs.text)
    listed = {d["id"] for d in alice.get("/models/downloads").json()["downloads"]}
    assert mine.json()["id"] in listed and theirs.json()["id"] not in listed
    assert bob.get("/models/downloads").json()["downloads"] == []
    assert {mine.json()["id"], theirs.json()["id"]} <= {
        d["id"] for d in admin.get("/models/downloads").json()["downloads"]
    }
    hidden_id = theirs.json()["id"]
    for path in (f"/models/downloads/{hidden_id}", f"/models/downloads/{hidden_id}/events"):
        hidden = alice.get(path)
        assert (hidden.status_code, hidden.json()["location"]) == (404, "id"), path
    sources = {m["filename"]: m["source"] for m in alice.get("/models/cache").json()["models"]}
    assert sources["alices.safetensors"] == rig.files.url("/private/alices.safetensors")
    assert sources["operators.safetensors"] is None  # the file is everyone's; its URL is not
    assert "/private/operators" not in alice.get("/models/cache").text
    assert_capacity_whole(rig.gateway, alice)


def test_a_key_has_at_most_its_max_downloads_in_flight(rig: Rig, alice: httpx.Client) -> None:
    for name in ("slow-1", "slow-2", "third"):
        rig.files.files[f"/m/{name}.safetensors"] = os.urandom(MIB)
        rig.files.rates[f"/m/{name}.safetensors"] = 200_000  # ~5 s each
    started = [download(alice, rig.files.url(f"/m/slow-{n}.safetensors")) for n in (1, 2)]
    assert [s.status_code for s in started] == [202, 202], [s.text for s in started]
    third = download(alice, rig.files.url("/m/third.safetensors"))
    assert third.status_code == 429, third.text
    assert (third.json()["code"], third.json()["location"]) == ("too_many_downloads", "url")
    assert third.headers["retry-after"]
    assert rig.files.hits["/m/third.safetensors"] == 0
    assert_capacity_whole(rig.gateway, alice)
    for answer in started:  # they end; the third goes through then
        location = answer.headers["location"]

        def ended(location: str = location) -> bool:
            return alice.get(location).json()["status"] in ("done", "failed")

        eventually(ended, 60, "the download to end")
        assert alice.get(location).json()["status"] == "done"
    assert download(alice, rig.files.url("/m/third.safetensors"), wait=True).status_code == 200


def test_a_server_that_lies_about_its_length_evicts_no_other_model(
    rig: Rig, alice: httpx.Client
) -> None:
    """Room is taken for bytes that arrive: a server that declares nearly the whole cache and
    trickles costs no other model its place, by POST /models/download or in a job."""
    cache = alice.get("/models/cache").json()
    room = cache["max_bytes"] - cache["used_bytes"]
    for name in ("kept-1", "kept-2"):  # fill the cache to within 4 MiB of its cap
        rig.files.files[f"/m/{name}.safetensors"] = os.urandom((room - 4 * MIB) // 2)
        assert download(alice, rig.files.url(f"/m/{name}.safetensors"), wait=True).is_success
    kept = sorted(m["filename"] for m in alice.get("/models/cache").json()["models"])
    declared = CAP - 2 * MIB  # fits only if every other model goes
    rig.files.trickles["/m/liar.safetensors"] = Trickle(declared, piece=100, every_s=0.05, for_s=8)
    rig.files.trickles["/m/liar-in-a-job.safetensors"] = Trickle(declared, 100, 0.05, for_s=8)
    direct = download(alice, rig.files.url("/m/liar.safetensors"), wait=True)
    job = alice.post(
        "/prompt", json={"prompt": lora_graph(rig.files.url("/m/liar-in-a-job.safetensors"))}
    )
    for answer, location in ((direct, "url"), (job, "prompt.10.inputs.lora_name")):
        assert answer.status_code == 502, answer.text
        assert (answer.json()["code"], answer.json()["location"]) == ("download_failed", location)
        assert_capacity_whole(rig.gateway, alice)
    after = alice.get("/models/cache").json()["models"]
    assert sorted(m["filename"] for m in after) == kept
    assert all((rig.models / "loras" / name).exists() for name in kept if "kept" in name)
    assert rig.files.trickles["/m/liar.safetensors"].sent > 0  # it did send, and was cut off
    assert "slower than MODEL_DOWNLOAD_MIN_KIB_PER_S" in rig.gateway.log_text()
