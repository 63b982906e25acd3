"""A client's own credentials in the model store: comfyui-api's `auth` and `credentials` reach the
source (HTTP on a real loopback file server that answers 401 without them, S3 on a real moto
server), never another host, and a file first fetched with them is handed to a later request
only once it shows its own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest
from pydantic import TypeAdapter

from app.core.download_auth import DownloadAuth
from app.core.downloads import ModelDownloadRequest
from app.core.errors import DownloadFailed, Forbidden, InvalidRequest
from app.core.options import JobOptions
from app.models.store import ModelStore
from tests.integration.fileserver import FileServer
from tests.s3_server import s3_server
from tests.unit.test_model_store import made_store

DATA = os.urandom(200_000)
TOKEN = "tok-" + os.urandom(6).hex()
AUTH: TypeAdapter[DownloadAuth] = TypeAdapter(DownloadAuth)
BEARER = {"type": "bearer", "token": TOKEN}


@pytest.fixture
def files() -> Iterator[FileServer]:
    server = FileServer("127.0.0.1")
    server.files["/p/a.safetensors"] = DATA
    server.guards["/p/a.safetensors"] = lambda seen: (
        seen.header("Authorization") == f"Bearer {TOKEN}"
    )
    server.files["/q/b.safetensors"] = DATA
    server.guards["/q/b.safetensors"] = lambda seen: seen.path.endswith("?sig=s3cr3t")
    yield server
    server.close()


async def download(
    store: ModelStore, url: str, auth: dict[str, Any] | None = None, **more: Any
) -> str:
    body = ModelDownloadRequest(url=url, folder="loras", **more)
    client_auth = AUTH.validate_python(auth) if auth else None
    started = await store.request(body, owner=more.pop("owner", None), client_auth=client_auth)
    return await started.outcome("url")


async def test_an_auth_opens_the_source_and_a_later_request_must_show_its_own(
    files: FileServer, tmp_path: Path
) -> None:
    url = files.url("/p/a.safetensors")
    async with made_store(tmp_path) as store:
        with pytest.raises(DownloadFailed):  # the source refuses a request without it
            await download(store, url)
        assert await download(store, url, BEARER) == "a.safetensors"
        assert (tmp_path / "loras" / "a.safetensors").read_bytes() == DATA
        fetched = files.hits["/p/a.safetensors"]
        with pytest.raises(Forbidden) as without:
            await download(store, url)
        wrong = {"type": "bearer", "token": "guess"}
        with pytest.raises(Forbidden) as guessed:
            await download(store, url, wrong)
        assert await download(store, url, BEARER) == "a.safetensors"  # proven: handed over
        assert files.hits["/p/a.safetensors"] == fetched  # never fetched again
    assert "authentication required" in without.value.message
    assert "HTTP 401" in guessed.value.message and TOKEN not in guessed.value.message
    heads = [s for s in files.requests_for("/p/a.safetensors") if s.header("Range") is None]
    assert heads  # the proofs went to the source


async def test_a_jobs_credentials_glob_and_query_auth(files: FileServer, tmp_path: Path) -> None:
    url = files.url("/q/b.safetensors")
    graph = {"4": {"class_type": "LoraLoader", "inputs": {"lora_name": url}}}
    sig = {"type": "query", "query_param": "sig", "query_value": "s3cr3t"}
    options = JobOptions.model_validate(
        {"credentials": [{"url_pattern": "http://127.0.0.1:*/p/**", "auth": BEARER},
                         {"url_pattern": "http://127.0.0.1:*/q/*", "auth": sig}]}
    )  # fmt: skip
    async with made_store(tmp_path) as store:
        resolved, hold = await store.prepare(graph, options)
        hold.release()
        with pytest.raises(Forbidden):  # another job, without the credentials
            await store.prepare(graph, None)
    assert resolved["4"]["inputs"]["lora_name"] == "b.safetensors"
    assert [s.path for s in files.requests_for("/q/b.safetensors?sig=s3cr3t")]


async def test_a_clients_auth_does_not_follow_a_redirect_to_another_host(
    files: FileServer, tmp_path: Path
) -> None:
    other = FileServer("127.0.0.2")
    other.files["/x.safetensors"] = DATA
    files.redirects["/r/x.safetensors"] = other.url("/x.safetensors")
    try:
        rules = {"credentials": [{"url_pattern": "http://**", "auth": BEARER}]}
        graph = {"4": {"class_type": "LoraLoader",
                       "inputs": {"lora_name": files.url("/r/x.safetensors")}}}  # fmt: skip
        async with made_store(tmp_path, allowed_private_networks="127.0.0.0/8") as store:
            _, hold = await store.prepare(graph, JobOptions.model_validate(rules))
            hold.release()
        assert (
            files.requests_for("/r/x.safetensors")[0].header("Authorization") == f"Bearer {TOKEN}"
        )
        assert other.requests_for("/x.safetensors")[0].header("Authorization") is None
    finally:
        other.close()


@pytest.fixture
def moto() -> Iterator[str]:
    with s3_server() as server:
        yield server.endpoint


async def test_a_clients_own_s3_keys_read_a_bucket_the_operator_does_not_serve(
    moto: str, tmp_path: Path
) -> None:
    keys = {"aws_access_key_id": "AKCLIENT", "aws_secret_access_key": "client-secret"}
    s3 = boto3.client("s3", endpoint_url=moto, region_name="us-east-1", **keys)
    s3.create_bucket(Bucket="theirs")
    s3.put_object(Bucket="theirs", Key="m/c.safetensors", Body=DATA)
    auth = {"type": "s3", "access_key_id": "AKCLIENT", "secret_access_key": "client-secret",
            "endpoint": moto, "region": "us-east-1"}  # fmt: skip
    url = "s3://theirs/m/c.safetensors"
    async with made_store(tmp_path, s3_buckets="models") as store:
        with pytest.raises(InvalidRequest):  # with the operator's keys: not a bucket they serve
            await download(store, url)
        assert await download(store, url, auth) == "c.safetensors"
        with pytest.raises(InvalidRequest):  # without its keys: still not the operator's
            await download(store, url)
        assert await download(store, url, auth) == "c.safetensors"  # HeadObject proved it
        s3.delete_object(Bucket="theirs", Key="m/c.safetensors")
        with pytest.raises(Forbidden) as missing:  # the proof reaches S3 each time
            await download(store, url, auth)
    assert (tmp_path / "loras" / "c.safetensors").read_bytes() == DATA
    assert "S3 object not found" in missing.value.message
    assert "client-secret" not in missing.value.message


async def test_an_s3_endpoint_the_address_policy_refuses_is_refused_before_connecting(
    tmp_path: Path,
) -> None:
    auth = {"type": "s3", "access_key_id": "a", "secret_access_key": "b",
            "endpoint": "http://169.254.169.254/"}  # fmt: skip
    async with made_store(tmp_path) as store:
        with pytest.raises(InvalidRequest) as refused:
            await download(store, "s3://b/k.safetensors", auth)
    assert "endpoint" in refused.value.message


async def test_our_own_request_credentials_guard_their_copy_too(
    files: FileServer, tmp_path: Path
) -> None:
    """`model_credentials` on a job and `auth` on POST /models/download are a request's own
    credentials as much as comfyui-api's: the copy they fetched is guarded the same way."""
    url = files.url("/p/a.safetensors")
    graph = {"4": {"class_type": "LoraLoader", "inputs": {"lora_name": url}}}
    mine = JobOptions.model_validate({"model_credentials": {files.url("/p/"): TOKEN}})
    async with made_store(tmp_path) as store:
        resolved, hold = await store.prepare(graph, mine)
        hold.release()
        with pytest.raises(Forbidden):
            await store.prepare(graph, None)
        body = ModelDownloadRequest(url=url, folder="loras", auth=TOKEN)
        again = await store.request(body)
        assert await again.outcome("url") == "a.safetensors"  # proven with `auth`
    assert resolved["4"]["inputs"]["lora_name"] == "a.safetensors"
    assert files.hits["/p/a.safetensors"] == 1
