"""The model store without ComfyUI: downloads from a real loopback file server into a temporary
cache folder, with a small real server in ComfyUI's place that lists that folder as ComfyUI's
`/models` does. A private address appears only where the address policy refuses it before any
connection (FakeDNS answers; nothing is sent)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from app.comfy.client import ComfyClient
from app.core.addresses import AddressPolicy
from app.core.downloads import ModelDownloadRequest
from app.core.errors import (
    DownloadFailed,
    GatewayError,
    InsufficientStorage,
    InvalidRequest,
    NotFound,
    TooManyDownloads,
)
from app.core.keys import Caller
from app.core.options import JobOptions
from app.core.settings import load_settings
from app.models.cache import Entry
from app.models.downloads import Download
from app.models.store import ModelStore
from tests.integration.fileserver import FileServer, Trickle
from tests.unit.fakedns import FakeDNS

DATA = os.urandom(3 * 2**20)
FOLDERS = ("checkpoints", "loras")


class ModelLister:
    """What ComfyUI answers about its models: `/models` and `/models/<folder>` of one root."""

    def __init__(self, root: Path) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/models":
                    body: Any = list(FOLDERS)
                else:
                    folder = root / self.path.removeprefix("/models/")
                    found = folder.iterdir() if folder.is_dir() else []
                    body = sorted(p.name for p in found if p.suffix == ".safetensors")
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def files() -> Iterator[FileServer]:
    server = FileServer("127.0.0.1")
    server.files["/m/a.safetensors"] = DATA
    yield server
    server.close()


@contextlib.asynccontextmanager
async def made_store(root: Path, **settings: Any) -> AsyncIterator[ModelStore]:
    """A store on root (its cache folder), with a lister of root in ComfyUI's place."""
    lister = ModelLister(root)
    values = {"model_cache_dir": root, "allowed_private_networks": "127.0.0.1/32", **settings}
    loaded = load_settings(**values)
    store = ModelStore(loaded, ComfyClient(lister.url), AddressPolicy.from_settings(loaded))
    try:
        yield store
    finally:
        await store.aclose()
        await store.client.aclose()
        lister.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ModelStore]:
    async with made_store(tmp_path, model_download_retries=2) as made:
        yield made


async def fetch(store: ModelStore, url: str, **body: Any) -> str:
    download = await store.request(ModelDownloadRequest(url=url, folder="loras", **body))
    return await download.outcome("url")


async def test_a_file_appears_under_its_name_only_once_complete(
    store: ModelStore, files: FileServer, tmp_path: Path
) -> None:
    files.rates["/m/a.safetensors"] = 4 * 2**20  # ~0.75 s
    download = await store.request(
        ModelDownloadRequest(url=files.url("/m/a.safetensors"), folder="loras")
    )
    await asyncio.sleep(0.3)
    on_the_way = [p.name for p in (tmp_path / "loras").iterdir()]
    assert on_the_way == [f".a.safetensors.{download.id}.gw-part"]  # hidden, not listed
    assert await download.outcome("url") == "a.safetensors"
    assert (tmp_path / "loras" / "a.safetensors").read_bytes() == DATA
    assert [p.name for p in (tmp_path / "loras").iterdir()] == ["a.safetensors"]
    index = json.loads((tmp_path / ".comfy-gateway-models.json").read_text())
    [entry] = index["models"]
    assert (entry["filename"], entry["sha256"]) == (
        "a.safetensors",
        hashlib.sha256(DATA).hexdigest(),
    )


async def test_many_asking_at_once_share_one_download(store: ModelStore, files: FileServer) -> None:
    files.rates["/m/a.safetensors"] = 8 * 2**20
    url = files.url("/m/a.safetensors")
    names = await asyncio.gather(*(fetch(store, url) for _ in range(8)))
    assert names == ["a.safetensors"] * 8
    assert files.hits["/m/a.safetensors"] == 1
    assert await fetch(store, url) == "a.safetensors"  # later: from the cache, by its URL
    assert files.hits["/m/a.safetensors"] == 1


async def test_a_cut_transfer_resumes_after_what_arrived(
    store: ModelStore, files: FileServer, tmp_path: Path
) -> None:
    files.cuts["/m/a.safetensors"] = [2**20, 2**20]  # two breaks: two resumes
    download = await store.request(
        ModelDownloadRequest(url=files.url("/m/a.safetensors"), folder="loras")
    )
    await download.outcome("url")
    ranges = [s.header("Range") for s in files.requests_for("/m/a.safetensors")]
    assert ranges == [None, f"bytes={2**20}-", f"bytes={2**21}-"]
    assert download.state().resumed == 2
    assert (tmp_path / "loras" / "a.safetensors").read_bytes() == DATA


async def test_a_transfer_that_keeps_breaking_fails_and_leaves_nothing(
    store: ModelStore, files: FileServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files.cuts["/m/a.safetensors"] = [1000] * 10
    with pytest.raises(DownloadFailed) as failed:
        await fetch(store, files.url("/m/a.safetensors"))
    # A server at a private address (allowed here) is internal: what it did stays in the log.
    assert "at a private address, did not deliver it" in failed.value.message
    assert "it broke off 3 times" in caplog.text  # MODEL_DOWNLOAD_RETRIES=2, then no more
    assert len(files.requests_for("/m/a.safetensors")) == 3
    assert list((tmp_path / "loras").iterdir()) == []


async def test_a_wrong_sha256_leaves_nothing(
    store: ModelStore, files: FileServer, tmp_path: Path
) -> None:
    with pytest.raises(DownloadFailed) as failed:
        await fetch(store, files.url("/m/a.safetensors"), sha256="ab" * 32)
    assert failed.value.details == {
        "expected_sha256": "ab" * 32,
        "actual_sha256": hashlib.sha256(DATA).hexdigest(),
    }
    assert list((tmp_path / "loras").iterdir()) == []
    assert store.cache.entries == {}


async def test_the_name_comes_from_the_url_or_content_disposition(
    store: ModelStore, files: FileServer
) -> None:
    files.files["/api/download/7"] = DATA
    files.dispositions["/api/download/7"] = "named.safetensors"
    files.files["/api/download/8"] = DATA
    assert await fetch(store, files.url("/api/download/7")) == "named.safetensors"
    with pytest.raises(InvalidRequest, match="gives no file name"):
        await fetch(store, files.url("/api/download/8"))


async def test_a_private_address_is_refused_before_any_connection(store: ModelStore) -> None:
    store.addresses.resolver = FakeDNS({"models.example": [["10.1.2.3"]]})
    with pytest.raises(InvalidRequest) as refused:
        await fetch(store, "http://models.example/x.safetensors")
    assert refused.value.location == "url"
    assert "10.1.2.3" in refused.value.message


async def test_a_graph_gets_its_files_and_holds_them_until_its_job_ends(
    store: ModelStore, files: FileServer
) -> None:
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "hand.ckpt"}},
        "2": {"class_type": "LoraLoader", "inputs": {"lora_name": files.url("/m/a.safetensors")}},
    }
    rewritten, held = await store.prepare(graph, JobOptions())
    assert rewritten["2"]["inputs"]["lora_name"] == "a.safetensors"
    assert rewritten["1"] == graph["1"]  # a name the gateway did not download: not held
    assert store.cache.holds["loras/a.safetensors"] == 1

    _, other = await store.prepare(graph, JobOptions())  # a second job naming the same URL
    assert store.cache.holds["loras/a.safetensors"] == 2
    held.release()  # the first job's task ended (the job runner releases)
    held.release()  # once: a second release changes nothing
    assert store.cache.holds["loras/a.safetensors"] == 1
    other.release()
    assert store.cache.holds["loras/a.safetensors"] == 0


async def test_downloads_can_be_turned_off(tmp_path: Path) -> None:
    graph = {"1": {"class_type": "LoraLoader", "inputs": {"lora_name": "https://x.example/a.pt"}}}
    async with made_store(tmp_path, model_downloads=False) as store:
        with pytest.raises(GatewayError) as refused:
            await store.prepare(graph, None)
    assert refused.value.location == "prompt.1.inputs.lora_name"
    assert "MODEL_DOWNLOADS=false" in refused.value.message


async def test_a_cache_folder_that_cannot_be_written_is_a_507_that_says_so(
    tmp_path: Path, files: FileServer
) -> None:
    (tmp_path / "not-a-folder").write_text("")
    async with made_store(tmp_path / "not-a-folder") as store:
        with pytest.raises(InsufficientStorage) as refused:
            await fetch(store, files.url("/m/a.safetensors"))
    assert refused.value.location == "url"
    assert "MODEL_CACHE_DIR must be a writable folder" in refused.value.message


def fill(store: ModelStore, *names: str, size: int = 2**20) -> None:
    """Downloaded models already in the cache (oldest first), as the store would have left them."""
    for number, name in enumerate(names):
        path = store.cache.path("loras", name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes(size))
        store.cache.add(Entry("loras", name, size, "0" * 64, f"https://x.example/{name}", name,
                              float(number), float(number)))  # fmt: skip


async def test_a_server_that_lies_about_its_length_evicts_nothing_it_did_not_send(
    tmp_path: Path, files: FileServer
) -> None:
    """It declares nearly the whole cap, sends a few hundred bytes and stalls: the cache keeps
    every model, since room is taken for bytes that came, not for bytes promised."""
    liar = Trickle(declared=3 * 2**20, piece=100, every_s=0.05, for_s=0.5)
    files.trickles["/m/liar.safetensors"] = liar
    cap_gb = 4 * 2**20 / 2**30  # 4 MiB: the three models fill 3 of them
    async with made_store(tmp_path, model_cache_max_gb=cap_gb, model_download_retries=1,
                          model_download_timeout_s=1) as store:  # fmt: skip
        fill(store, "a.safetensors", "b.safetensors", "c.safetensors")
        with pytest.raises(DownloadFailed):
            await fetch(store, files.url("/m/liar.safetensors"))
        assert sorted(store.cache.entries) == [
            "loras/a.safetensors", "loras/b.safetensors", "loras/c.safetensors",
        ]  # fmt: skip
        assert store.cache.reservations == set()
    assert liar.sent > 0  # bytes came, and were written, within the free room
    assert len(files.requests_for("/m/liar.safetensors")) == 2  # resumed once, then failed


async def test_a_download_slower_than_the_minimum_rate_is_broken_off(
    tmp_path: Path, files: FileServer, caplog: pytest.LogCaptureFixture
) -> None:
    """2 KiB a second against a minimum of 16: broken off after each window, then failed."""
    files.trickles["/m/slow.safetensors"] = Trickle(declared=2**20, piece=200, every_s=0.1)
    async with made_store(tmp_path, model_download_retries=1, model_download_timeout_s=1,
                          model_download_min_kib_per_s=16) as store:  # fmt: skip
        async with asyncio.timeout(15):  # without a minimum it would take 500 s
            with pytest.raises(DownloadFailed):
                await fetch(store, files.url("/m/slow.safetensors"))
    assert "slower than MODEL_DOWNLOAD_MIN_KIB_PER_S (16)" in caplog.text
    assert list((tmp_path / "loras").iterdir()) == []


async def test_a_key_has_at_most_its_max_downloads_in_flight_and_sees_only_its_own(
    tmp_path: Path, files: FileServer
) -> None:
    files.files["/m/b.safetensors"] = DATA
    files.rates["/m/a.safetensors"] = files.rates["/m/b.safetensors"] = 2 * 2**20
    limits = '{"alice": {"models": "download", "max_downloads": 1}}'
    async with made_store(tmp_path, api_keys="alice:alice-key-0123456789ab",
                          key_limits=limits) as store:  # fmt: skip
        alice, bob = Caller("alice", named=True), Caller("bob", named=True)

        async def ask(path: str, owner: str) -> Download:
            body = ModelDownloadRequest(url=files.url(path), folder="loras")
            return await store.request(body, owner=owner)

        first = await ask("/m/a.safetensors", "alice")
        with pytest.raises(TooManyDownloads) as refused:
            await ask("/m/b.safetensors", "alice")
        assert (refused.value.status, refused.value.location) == (429, "url")
        assert refused.value.headers["Retry-After"]
        # Joining one in flight is free; the joiner sees it from then on.
        assert await ask("/m/a.safetensors", "bob") is first
        other = await ask("/m/b.safetensors", "bob")
        assert [d.id for d in store.shown_to(alice)] == [first.id]
        assert [d.id for d in store.shown_to(bob)] == [first.id, other.id]
        assert len(store.shown_to(Caller("ops", admin=True))) == 2
        with pytest.raises(NotFound):
            store.get(other.id, alice)  # another key's: the same 404 as an unknown id
        await first.outcome("url")
        await other.outcome("url")
        state = {m.filename: m.source for m in store.cache.state(alice).models}
        assert state == {"a.safetensors": files.url("/m/a.safetensors"), "b.safetensors": None}


async def test_an_s3_bucket_the_operator_did_not_list_is_refused_before_anything(
    tmp_path: Path,
) -> None:
    async with made_store(tmp_path, s3_buckets="models") as store:
        with pytest.raises(InvalidRequest) as refused:
            await fetch(store, "s3://payroll/x.safetensors")
        graph = {"4": {"class_type": "LoraLoader",
                       "inputs": {"lora_name": "s3://payroll/x.safetensors"}}}  # fmt: skip
        with pytest.raises(InvalidRequest) as in_graph:
            await store.prepare(graph, None)
        assert store.downloads == {} and store.cache.holds.total() == 0
    assert refused.value.location == "url" and "S3_BUCKETS: models" in refused.value.message
    assert in_graph.value.location == "prompt.4.inputs.lora_name"
