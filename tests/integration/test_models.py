"""Models on demand against a real ComfyUI: downloads by URL (from a real file server with
`Range`, and from S3), single flight, resume, sha256, the LRU cache and its cap, credentials,
the address policy, live workflow enums, the start-up manifest, system events and the CLI.

One gateway serves the module, with its own MODEL_DIR (the tiny models hard-linked in: the
operator's files) that is also its MODEL_CACHE_DIR, capped at 0.3 GiB. Every server is on
loopback: 127.0.0.1 and 127.0.0.2 are allowed by ALLOWED_PRIVATE_NETWORKS, 127.0.0.3 is not.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.fileserver import FileServer
from tests.integration.harness import MODELS, ROOT, Gateway, eventually, graph
from tests.integration.receiver import Receiver
from tests.s3_server import S3Server

TINY = MODELS / "checkpoints" / "tiny-sd15-random.safetensors"
LORA = MODELS / "loras" / "tiny-lora.safetensors"
CAP_GIB = 0.3
MIB = 2**20
# Credentials that must reach their host and never appear in a log line or an answer.
SECRET = "secret-token-7f3a9c"
JOB_SECRET = "job-token-19c2d4"
AUTH_SECRET = "auth-token-55e1b0"
CLIENT_SECRET = "client-token-3b8e61"  # comfyui-api's `credentials` and `auth`


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def place(source: Path, target: Path) -> None:
    """The operator's file, put there by hand (a hard link: 266 MiB are not copied)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy(source, target)


@dataclass
class Rig:
    gateway: Gateway
    files: FileServer  # 127.0.0.1; paths under /private/ get MODEL_CREDENTIALS' token
    other: FileServer  # 127.0.0.2
    trap: Receiver  # 127.0.0.3: the address policy refuses it
    hooks: Receiver  # 127.0.0.1: system events, and the webhook that holds a job
    models: Path  # MODEL_DIR and MODEL_CACHE_DIR
    s3: Any

    def client(self) -> httpx.Client:
        return self.gateway.client(timeout_s=180)

    def download(self, path: str, folder: str = "loras", **body: Any) -> httpx.Response:
        with self.client() as client:
            return client.post(
                "/models/download",
                json={"url": self.files.url(path), "folder": folder, "wait": True, **body},
            )

    def cache(self) -> dict[str, Any]:
        with self.client() as client:
            cached: dict[str, Any] = client.get("/models/cache").json()
        return cached

    def cached(self, folder: str, name: str) -> dict[str, Any] | None:
        return next(
            (m for m in self.cache()["models"] if (m["folder"], m["filename"]) == (folder, name)),
            None,
        )

    def lora_enum(self) -> list[str]:
        with self.client() as client:
            spec = client.get("/openapi.json").json()
        name = spec["components"]["schemas"]["SdxlTxt2imgLoraSpec"]["properties"]["name"]
        enum: list[str] = name["anyOf"][0]["enum"]
        return enum


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    work = tmp_path_factory.mktemp("models")
    models = work / "models"
    place(TINY, models / "checkpoints" / TINY.name)
    place(LORA, models / "loras" / LORA.name)
    files, other = FileServer("127.0.0.1"), FileServer("127.0.0.2")
    trap, hooks = Receiver(host="127.0.0.3"), Receiver(host="127.0.0.1")
    moto = S3Server.start("models")
    aws, s3 = moto.env, moto.client()
    lora = LORA.read_bytes()
    files.files["/m/ckpt/" + TINY.name] = TINY.read_bytes()
    for name in ("fresh", "crowd", "manifest", "tiny", "cli", "events"):
        files.files[f"/m/{name}-lora.safetensors"] = lora
    manifest = work / "manifest.yaml"
    manifest.write_text(
        f"models:\n"
        f"  - url: {files.url('/m/manifest-lora.safetensors')}\n"
        f"    folder: loras\n"
        f"    sha256: {sha256(lora)}\n"
        f"  - url: {files.url('/m/tiny-lora.safetensors')}\n"  # there by hand: not fetched
        f"    folder: loras\n"
    )
    env = {
        "MODEL_DIR": str(models),
        "WORKFLOW_DIR": str(ROOT / "workflows"),
        "WARMUP_PROMPT_FILE": str(ROOT / "tests" / "graphs" / "t2i.json"),
        "ALLOWED_PRIVATE_NETWORKS": "127.0.0.1/32,127.0.0.2/32",
        "MODEL_CACHE_MAX_GB": str(CAP_GIB),
        "RESULT_CACHE_MAX_MB": "16",  # a job's own credentials keep its result out of it
        "MODEL_CREDENTIALS": json.dumps({files.url("/private/"): SECRET}),
        "MODEL_WATCH_INTERVAL_S": "1",
        "MODEL_DOWNLOAD_TIMEOUT_S": "5",
        "MODEL_DOWNLOAD_RETRIES": "3",
        "MODELS_MANIFEST": str(manifest),
        "SYSTEM_WEBHOOK_URL": hooks.url("/system"),
        "SYSTEM_WEBHOOK_EVENTS": "model.downloaded,model.evicted,file_downloaded,file_deleted",
        "WEBHOOK_TIMEOUT_S": "30",
        **aws,
    }
    gateway = Gateway(work, **env)
    try:
        gateway.start()
        yield Rig(gateway, files, other, trap, hooks, models, s3)
    finally:
        gateway.stop()
        for server in (files, other, trap, hooks):
            server.close()
        moto.stop()
    log = gateway.log_text()
    for secret in (SECRET, JOB_SECRET, AUTH_SECRET, CLIENT_SECRET):
        assert secret not in log, "a credential reached the log"


def test_the_manifest_is_fetched_before_ready(rig: Rig) -> None:
    log = rig.gateway.log_text()
    fetched = log.index("MODELS_MANIFEST: 2 model(s) in place")
    assert "(1 fetched, 1 there already)" in log[fetched:]
    assert fetched < log.index(" ready: ComfyUI at")
    assert rig.files.hits["/m/manifest-lora.safetensors"] == 1
    assert rig.files.hits["/m/tiny-lora.safetensors"] == 0  # the operator's file was there
    assert (rig.models / "loras" / "manifest-lora.safetensors").read_bytes() == LORA.read_bytes()
    entry = rig.cached("loras", "manifest-lora.safetensors")
    assert entry is not None and entry["pinned"]


def test_txt2img_naming_the_checkpoint_by_url_downloads_it_and_runs(rig: Rig) -> None:
    prompt = graph("t2i")
    url = rig.files.url("/m/ckpt/" + TINY.name)
    prompt["1"]["inputs"]["ckpt_name"] = url
    hand_placed = (rig.models / "checkpoints" / TINY.name).stat()
    with rig.client() as client:
        first = client.post("/prompt", json={"prompt": prompt})
        assert first.status_code == 200, first.text
        again = client.post("/prompt", json={"prompt": prompt})
        assert again.status_code == 200, again.text
    name = first.json()["prompt"]["1"]["inputs"]["ckpt_name"]
    # The URL's name is the operator's file's: the download gets a name of its own.
    assert name.startswith("tiny-sd15-random-") and name != TINY.name
    assert again.json()["prompt"]["1"]["inputs"]["ckpt_name"] == name
    assert rig.files.hits["/m/ckpt/" + TINY.name] == 1  # the second job found it cached
    assert (rig.models / "checkpoints" / name).stat().st_size == TINY.stat().st_size
    assert (rig.models / "checkpoints" / TINY.name).stat().st_ino == hand_placed.st_ino
    assert len(first.json()["images"]) == 1


def test_a_workflow_field_takes_a_url(rig: Rig) -> None:
    url = rig.files.url("/m/ckpt/" + TINY.name)
    body = {"input": {"prompt": "a cat", "width": 64, "height": 64, "steps": 1, "checkpoint": url}}
    with rig.client() as client:
        response = client.post("/workflows/sd15/txt2img", json=body)
        refused = client.post(
            "/workflows/sd15/txt2img", json={"input": {"prompt": "x", "checkpoint": "nope.ckpt"}}
        )
    assert response.status_code == 200, response.text
    assert response.json()["input"]["checkpoint"] == url
    assert response.json()["prompt"]["1"]["inputs"]["ckpt_name"].startswith("tiny-sd15-random-")
    assert rig.files.hits["/m/ckpt/" + TINY.name] == 1
    assert refused.status_code == 400
    assert refused.json()["location"] == "input.checkpoint"
    assert "or give an http(s):// or s3:// URL" in refused.json()["error"]


def test_eight_jobs_naming_one_new_url_download_it_once(rig: Rig) -> None:
    rig.files.rates["/m/crowd-lora.safetensors"] = 60_000  # ~1.5 s: every job arrives meanwhile
    prompt = graph("lora")
    prompt["10"]["inputs"]["lora_name"] = rig.files.url("/m/crowd-lora.safetensors")

    def run(seed: int) -> httpx.Response:
        mine = json.loads(json.dumps(prompt))
        mine["5"]["inputs"]["seed"] = seed
        with rig.client() as client:
            return client.post("/prompt", json={"prompt": mine})

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(run, range(8)))
    assert [a.status_code for a in answers] == [200] * 8, [a.text[:200] for a in answers]
    assert rig.files.hits["/m/crowd-lora.safetensors"] == 1
    names = {a.json()["prompt"]["10"]["inputs"]["lora_name"] for a in answers}
    assert names == {"crowd-lora.safetensors"}


def test_a_transfer_cut_halfway_resumes(rig: Rig) -> None:
    data = os.urandom(8 * MIB)
    rig.files.files["/m/resume.safetensors"] = data
    rig.files.cuts["/m/resume.safetensors"] = [4 * MIB]
    response = rig.download("/m/resume.safetensors", sha256=sha256(data))
    assert response.status_code == 200, response.text
    state = response.json()
    assert (state["status"], state["resumed"], state["sha256"]) == ("done", 1, sha256(data))
    first, second = rig.files.requests_for("/m/resume.safetensors")
    assert first.header("Range") is None
    assert second.header("Range") == f"bytes={4 * MIB}-"  # only the second half came again
    assert second.header("If-Range")  # and only if it is still the same file
    assert (rig.models / "loras" / "resume.safetensors").read_bytes() == data


def test_a_wrong_sha256_leaves_no_file_and_says_so(rig: Rig) -> None:
    rig.files.files["/m/wrong.safetensors"] = os.urandom(MIB)
    response = rig.download("/m/wrong.safetensors", sha256="0" * 64)
    assert response.status_code == 502, response.text
    body = response.json()
    assert (body["code"], body["location"]) == ("download_failed", "url")
    assert f"not the {'0' * 64} asked for" in body["error"]
    assert body["details"]["expected_sha256"] == "0" * 64
    left = [p.name for p in (rig.models / "loras").iterdir() if "wrong" in p.name]
    assert left == []  # neither the file nor its temporary name


def test_a_token_goes_to_its_host_and_not_to_a_redirect_elsewhere(rig: Rig) -> None:
    lora = LORA.read_bytes()
    rig.other.files["/public/moved-lora.safetensors"] = lora
    rig.files.redirects["/private/moved-lora.safetensors"] = rig.other.url(
        "/public/moved-lora.safetensors"
    )
    rig.files.files["/public/open-lora.safetensors"] = lora
    assert rig.download("/private/moved-lora.safetensors").status_code == 200
    assert rig.download("/public/open-lora.safetensors").status_code == 200
    [asked] = rig.files.requests_for("/private/moved-lora.safetensors")
    assert asked.header("Authorization") == f"Bearer {SECRET}"
    [moved] = rig.other.requests_for("/public/moved-lora.safetensors")
    assert moved.header("Authorization") is None  # another host: the token stays home
    [open_] = rig.files.requests_for("/public/open-lora.safetensors")
    assert open_.header("Authorization") is None  # same host, outside the prefix
    # A request's own credentials: `auth` for its URL's host, `model_credentials` for a job.
    rig.other.files["/auth/auth-lora.safetensors"] = lora
    rig.other.files["/job/job-lora.safetensors"] = lora
    prompt = graph("lora")
    prompt["10"]["inputs"]["lora_name"] = rig.other.url("/job/job-lora.safetensors")
    with rig.client() as client:
        auth = client.post("/models/download", json={
            "url": rig.other.url("/auth/auth-lora.safetensors"), "folder": "loras",
            "wait": True, "auth": AUTH_SECRET,
        })  # fmt: skip
        job = client.post("/prompt", json={
            "prompt": prompt, "model_credentials": {rig.other.url("/job/"): JOB_SECRET},
        })  # fmt: skip
    assert auth.status_code == 200 and job.status_code == 200, (auth.text, job.text[:300])
    assert (
        rig.other.requests_for("/auth/auth-lora.safetensors")[0].header("Authorization")
        == f"Bearer {AUTH_SECRET}"
    )
    assert (
        rig.other.requests_for("/job/job-lora.safetensors")[0].header("Authorization")
        == f"Bearer {JOB_SECRET}"
    )
    for answer in (auth, job):
        assert AUTH_SECRET not in answer.text and JOB_SECRET not in answer.text


def test_a_private_address_is_refused(rig: Rig) -> None:
    refused = f"http://127.0.0.3:{rig.trap.port}/x.safetensors"
    rig.files.redirects["/m/to-refused.safetensors"] = refused
    prompt = graph("t2i")
    prompt["1"]["inputs"]["ckpt_name"] = refused
    with rig.client() as client:
        direct = client.post("/models/download", json={"url": refused, "folder": "loras"})
        hop = client.post("/models/download", json={
            "url": rig.files.url("/m/to-refused.safetensors"), "folder": "loras", "wait": True,
        })  # fmt: skip
        job = client.post("/prompt", json={"prompt": prompt})
    for answer, location in ((direct, "url"), (hop, "url"), (job, "prompt.1.inputs.ckpt_name")):
        assert answer.status_code == 400, answer.text
        body = answer.json()
        assert body["location"] == location
        assert "127.0.0.3" in body["error"] and "ALLOWED_PRIVATE_NETWORKS" in body["error"]
    assert rig.trap.connections == 0


def test_a_new_lora_reaches_the_workflow_enum_without_a_restart(rig: Rig) -> None:
    assert "fresh-lora.safetensors" not in rig.lora_enum()
    response = rig.download("/m/fresh-lora.safetensors")
    assert response.status_code == 200, response.text
    assert "fresh-lora.safetensors" in rig.lora_enum()  # as soon as the download says done
    with rig.client() as client:
        assert "fresh-lora.safetensors" in client.get("/models").json()["loras"]
    # A file put there by hand is seen by the next look at ComfyUI's folders (every second).
    place(LORA, rig.models / "loras" / "by-hand-lora.safetensors")
    eventually(lambda: "by-hand-lora.safetensors" in rig.lora_enum(), 20, "the hand-put LoRA")


def test_a_model_from_s3(rig: Rig) -> None:
    data = LORA.read_bytes()
    rig.s3.put_object(Bucket="models", Key="loras/s3-lora.safetensors", Body=data)
    with rig.client() as client:
        response = client.post("/models/download", json={
            "url": "s3://models/loras/s3-lora.safetensors", "folder": "loras", "wait": True,
        })  # fmt: skip
        missing = client.post("/models/download", json={
            "url": "s3://models/loras/none.safetensors", "folder": "loras", "wait": True,
        })  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json()["sha256"] == sha256(data)
    assert (rig.models / "loras" / "s3-lora.safetensors").read_bytes() == data
    assert missing.status_code == 502 and "NoSuchKey" in missing.json()["error"]


def test_a_download_answers_202_and_its_events_follow_it(rig: Rig) -> None:
    rig.files.files["/m/events.safetensors"] = os.urandom(2 * MIB)
    rig.files.rates["/m/events.safetensors"] = 1_400_000  # ~1.5 s
    url = rig.files.url("/m/events.safetensors")
    with rig.client() as client:
        accepted = client.post("/models/download", json={"url": url, "folder": "loras"})
        assert accepted.status_code == 202, accepted.text
        location = accepted.headers["location"]
        events = []
        with client.stream("GET", f"{location}/events") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    events.append(line[6:].strip())
                elif line.startswith("data:"):
                    events[-1] = (events[-1], json.loads(line[5:]))
        state = client.get(location).json()
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "done" and kinds.count("progress") >= 2, kinds
    progress = [data["bytes"] for kind, data in events if kind == "progress"]
    assert progress == sorted(progress)
    assert any(0 < got < 2 * MIB for got in progress)  # seen on its way, not only at the end
    assert (state["status"], state["bytes"], state["total"]) == ("done", 2 * MIB, 2 * MIB)


def test_the_cache_cap_evicts_the_least_recently_used_and_never_one_in_use(rig: Rig) -> None:
    checkpoint = next(m for m in rig.cache()["models"] if m["folder"] == "checkpoints")
    held = graph("t2i")
    held["1"]["inputs"]["ckpt_name"] = checkpoint["filename"]
    hook = rig.hooks.script("/held", 200, delays_s=(12.0,))  # the job's task ends after this
    with rig.client() as client:
        accepted = client.post("/prompt", json={"prompt": held, "webhook_v2": hook})
    assert accepted.status_code == 202, accepted.text
    cache = rig.cache()
    assert [m["in_use"] for m in cache["models"] if m["folder"] == "checkpoints"] == [1]
    cap, used = cache["max_bytes"], cache["used_bytes"]
    older = used - checkpoint["bytes"]  # every other evictable download, all older than these
    size = (cap - used) // 2 - MIB
    for name in ("fill-1", "fill-2"):
        rig.files.files[f"/m/{name}.safetensors"] = os.urandom(size)
        assert rig.download(f"/m/{name}.safetensors").status_code == 200
    assert rig.download("/m/fill-1.safetensors").json()["fetched"] is False  # used again
    # Room for this one means evicting everything older and fill-2, but not fill-1.
    room = cap - rig.cache()["used_bytes"]
    rig.files.files["/m/fill-3.safetensors"] = os.urandom(room + older + size // 2)
    assert rig.download("/m/fill-3.safetensors").status_code == 200
    left = {(m["folder"], m["filename"]) for m in rig.cache()["models"]}
    assert ("loras", "fill-1.safetensors") in left
    assert ("loras", "fill-2.safetensors") not in left
    assert ("checkpoints", checkpoint["filename"]) in left  # held by the job
    assert ("loras", "manifest-lora.safetensors") in left  # pinned
    assert not (rig.models / "loras" / "fill-2.safetensors").exists()
    assert (rig.models / "checkpoints" / TINY.name).exists()  # the operator's files
    assert (rig.models / "loras" / LORA.name).exists()
    # More than all but the held checkpoint could free: 507, and nothing is evicted for it.
    before = rig.cache()["models"]
    rig.files.announced["/m/huge.safetensors"] = cap - checkpoint["bytes"] + MIB
    refused = rig.download("/m/huge.safetensors")
    assert refused.status_code == 507, refused.text
    assert "in use by queued or running jobs" in refused.json()["error"]
    assert [m["filename"] for m in rig.cache()["models"]] == [m["filename"] for m in before]
    rig.files.announced["/m/huger.safetensors"] = cap + 1
    larger = rig.download("/m/huger.safetensors")
    assert (larger.status_code, larger.json()["location"]) == (507, "url")
    assert "is larger than MODEL_CACHE_MAX_GB" in larger.json()["error"]
    # Released once the job's task ends: after the receiver answers (12 s after it was sent).
    rig.hooks.wait_for("/held", 1, timeout_s=60)

    def released() -> bool:
        entry = rig.cached("checkpoints", checkpoint["filename"])
        return entry is not None and entry["in_use"] == 0

    eventually(released, 30, "the job to release the checkpoint")
    with rig.client() as client:
        assert "fill-2.safetensors" not in client.get("/models").json()["loras"]


def test_system_events_announce_downloads_and_evictions(rig: Rig) -> None:
    events = [d.json() for d in rig.hooks.wait_for("/system", 2)]
    kinds = {e["event"] for e in events}
    assert {"model.downloaded", "model.evicted"} <= kinds
    models = [e for e in events if e["event"].startswith("model.")]
    landed = next(e for e in models if e["data"]["filename"] == "fresh-lora.safetensors")
    assert landed["data"]["folder"] == "loras" and landed["data"]["bytes"] == LORA.stat().st_size
    evicted = [e["data"]["filename"] for e in events if e["event"] == "model.evicted"]
    assert "fill-2.safetensors" in evicted
    # comfyui-api's names for the same: storage.file_downloaded / file_deleted
    stored = next(
        e["data"]
        for e in events
        if e["event"] == "storage.file_downloaded"
        and e["data"]["local_path"].endswith("/loras/fresh-lora.safetensors")
    )
    assert stored["size"] == LORA.stat().st_size and stored["duration"] >= 0
    assert stored["url"] == landed["data"]["source"]
    deleted = [e["data"]["local_path"] for e in events if e["event"] == "storage.file_deleted"]
    assert any(path.endswith("/fill-2.safetensors") for path in deleted)
    text = json.dumps(events)
    assert SECRET not in text and AUTH_SECRET not in text and JOB_SECRET not in text


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.tools.cli", "models", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_cli_pulls_a_model_with_progress_and_lists_the_folder(rig: Rig) -> None:
    url = rig.files.url("/m/cli-lora.safetensors")
    pulled = cli("pull", url, "--folder", "loras", "--url", rig.gateway.url)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.strip() == "loras/cli-lora.safetensors"
    assert "of 0.1 MiB" in pulled.stderr and "downloaded: sha256" in pulled.stderr
    listed = cli("ls", "--folder", "loras", "--url", rig.gateway.url)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == "loras/"
    assert any(line.startswith("  cli-lora.safetensors  [downloaded: ") for line in lines)
    assert f"  {LORA.name}" in lines  # the operator's: no notes
    failed = cli("pull", rig.files.url("/m/none.safetensors"), "--folder", "loras",
                 "--url", rig.gateway.url)  # fmt: skip
    assert failed.returncode == 1 and "download_failed" in failed.stderr


def test_their_download_endpoint(rig: Rig) -> None:
    """comfyui-api's POST /download: their body, their answers."""
    lora = LORA.read_bytes()
    rig.files.files["/theirs/their-lora.safetensors"] = lora
    url = rig.files.url("/theirs/their-lora.safetensors")
    with rig.client() as client:

        def ask(**body: Any) -> httpx.Response:
            return client.post("/download", json={"url": url, "model_type": "loras", **body})

        started = ask(filename="their-async.safetensors")
        eventually(lambda: (rig.models / "loras" / "their-async.safetensors").exists())
        named = ask(wait=True)  # the same URL: named after it all the same
        checkpoint = ask(model_type="checkpoints", filename="their-ckpt.safetensors", wait=True)
        unknown = ask(model_type="no_such_type", wait=True)
        bad_url = ask(url="not-a-valid-url", wait=True)
        failed = ask(url=rig.files.url("/theirs/none.safetensors"), wait=True)
        escape = ask(filename="../escape.safetensors", wait=True)
    assert started.status_code == 202, started.text
    expected = {"url": url, "model_type": "loras", "filename": "their-async.safetensors"}
    assert started.json() == {**expected, "status": "started"}
    assert named.status_code == 200, named.text
    body = named.json()
    assert (body["status"], body["filename"]) == ("completed", "their-lora.safetensors")
    assert body["size"] == len(lora)
    assert body["duration"] >= 0 and body["url"] == url and body["model_type"] == "loras"
    assert checkpoint.status_code == 200 and checkpoint.json()["model_type"] == "checkpoints"
    assert (rig.models / "checkpoints" / "their-ckpt.safetensors").read_bytes() == lora
    for refused, where in ((unknown, "model_type"), (bad_url, "url"), (escape, "filename")):
        assert refused.status_code == 400, refused.text
        assert isinstance(refused.json()["error"], str) and refused.json()["location"] == where
    assert "loras" in unknown.json()["error"]  # it names the folders there are
    assert failed.status_code == 400, failed.text
    assert "could not be downloaded" in failed.json()["error"]  # a private server: no status
    assert not (rig.models / "escape.safetensors").exists()


def test_their_credentials_reach_the_source_and_guard_its_copy(rig: Rig) -> None:
    """A job's comfyui-api `credentials` open a guarded source; another job naming the same URL
    without them does not get the copy; none of it is echoed."""
    rig.other.files["/guarded/client-lora.safetensors"] = LORA.read_bytes()
    rig.other.guards["/guarded/client-lora.safetensors"] = lambda seen: (
        seen.header("X-Client-Key") == CLIENT_SECRET
    )
    url = rig.other.url("/guarded/client-lora.safetensors")
    prompt = graph("lora")
    prompt["10"]["inputs"]["lora_name"] = url
    key = {"type": "header", "header_name": "X-Client-Key", "header_value": CLIENT_SECRET}
    credentials = [
        {
            "url_pattern": "http://127.0.0.2:*/elsewhere/**",
            "auth": {"type": "bearer", "token": "x"},
        },
        {"url_pattern": "http://127.0.0.2:*/guarded/*", "auth": key},
    ]
    cached = {"cache": True, "cache_external_inputs": True}  # no API keys: one cache for all
    with rig.client() as client:
        job = client.post("/prompt", json={"prompt": prompt, "credentials": credentials, **cached})
        without = client.post("/prompt", json={"prompt": prompt, **cached})
        wrong = client.post("/download", json={
            "url": url, "model_type": "loras", "wait": True,
            "auth": {"type": "header", "header_name": "X-Client-Key", "header_value": "guess"},
        })  # fmt: skip
        again = client.post("/download", json={
            "url": url, "model_type": "loras", "wait": True, "auth": key,
        })  # fmt: skip
    assert job.status_code == 200, job.text[:500]
    assert job.headers["cache-status"] == "comfy-gateway; fwd=bypass; detail=credentials"
    assert job.json()["prompt"]["10"]["inputs"]["lora_name"] == "client-lora.safetensors"
    assert without.status_code == 403, without.text
    assert without.json()["location"] == "prompt.10.inputs.lora_name"
    assert "authentication required" in without.json()["error"]
    assert wrong.status_code == 403 and "HTTP 401" in wrong.json()["error"], wrong.text
    assert again.status_code == 200 and again.json()["filename"] == "client-lora.safetensors"
    assert rig.other.hits["/guarded/client-lora.safetensors"] == 1  # fetched once, proven after
    for answer in (job, without, wrong, again):
        assert CLIENT_SECRET not in answer.text


def test_their_s3_auth_reads_with_the_clients_own_keys(rig: Rig) -> None:
    data = LORA.read_bytes()
    rig.s3.put_object(Bucket="models", Key="theirs/s3-auth-lora.safetensors", Body=data)
    endpoint = rig.gateway.env["AWS_ENDPOINT_URL"]
    auth = {"type": "s3", "access_key_id": "client-key", "secret_access_key": CLIENT_SECRET,
            "region": "us-east-1", "endpoint": endpoint}  # fmt: skip
    with rig.client() as client:
        response = client.post("/download", json={
            "url": "s3://models/theirs/s3-auth-lora.safetensors", "model_type": "loras",
            "wait": True, "auth": auth,
        })  # fmt: skip
    assert response.status_code == 200, response.text
    assert (rig.models / "loras" / "s3-auth-lora.safetensors").read_bytes() == data
    assert CLIENT_SECRET not in response.text
