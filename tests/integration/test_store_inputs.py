"""Inputs from the operator's stores (s3:// on moto's server, Azure blob URLs on Azurite), the
system events as comfyui-api sends them (`storage.file_downloaded`, ComfyUI's message at
`data`), and convert_output with sharp's option names, against a real ComfyUI."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.jobs.upload_blob import BLOCK_BYTES
from app.jobs.upload_s3 import PART_BYTES
from tests.azurite_server import Azurite
from tests.integration.harness import Gateway, assert_capacity_whole, eventually, running
from tests.integration.receiver import Receiver
from tests.integration.test_media import (
    PNG_BYTES,
    input_leftovers,
    load_and_save,
    load_and_scale,
    noise_png,
)
from tests.integration.test_prompt import decode_image, empty_image
from tests.s3_server import s3_server

GREEN = (10, 200, 30)  # PNG_BYTES' colour


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    with s3_server("inputs", "elsewhere") as server:
        client = server.client()
        client.put_object(Bucket="inputs", Key="pics/green.png", Body=PNG_BYTES)
        big = b"\x89PNG\r\n\x1a\n" + bytes(2**21)
        client.put_object(Bucket="inputs", Key="big.png", Body=big)
        client.put_object(Bucket="elsewhere", Key="green.png", Body=PNG_BYTES)
        yield client


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    server = Azurite(tmp_path_factory.mktemp("azurite")).start()
    server.put_blob("pictures", "in/green.png", PNG_BYTES)
    server.put_blob("private", "green.png", PNG_BYTES)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, s3: Any, azurite: Azurite, receiver: Receiver
) -> Iterator[Gateway]:
    env = {
        "INPUT_MAX_MB": "1",
        "AWS_ENDPOINT_URL": s3.meta.endpoint_url,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "S3_BUCKETS": "inputs",
        "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
        "AZURE_STORAGE_CONTAINERS": "pictures",
        "SYSTEM_WEBHOOK_URL": receiver.url("/system"),
        "SYSTEM_WEBHOOK_EVENTS": "execution_success,file_downloaded,file_uploaded",
        "KEEP_OUTPUTS": "true",  # ComfyUI's own copy stays, for an upload to be compared with
    }  # no ALLOWED_PRIVATE_NETWORKS: the stores are the operator's, not a request's address
    with running(tmp_path_factory.mktemp("stores"), **env) as gw:
        yield gw


def green_twice(client: httpx.Client, url: str) -> dict[str, Any]:
    response = client.post("/prompt", json={"prompt": load_and_scale(url)})
    assert response.status_code == 200, response.text
    image = decode_image(response.json()["images"][0]).convert("RGB")
    assert image.size == (24, 20) and image.getpixel((3, 3)) == GREEN
    answer: dict[str, Any] = response.json()
    return answer


def events(receiver: Receiver, name: str) -> list[dict[str, Any]]:
    return [d.json() for d in receiver.deliveries("/system") if d.json()["event"] == name]


@pytest.mark.parametrize("kind", ["s3", "azure"])
def test_a_store_url_is_an_input(
    client: httpx.Client, gateway: Gateway, receiver: Receiver, azurite: Azurite, kind: str
) -> None:
    url = (
        "s3://inputs/pics/green.png"
        if kind == "s3"
        else f"{azurite.endpoint}/pictures/in/green.png"
    )
    answer = green_twice(client, url)
    assert input_leftovers(gateway) == []
    downloaded = "storage.file_downloaded"
    eventually(lambda: any(e["data"]["url"] == url for e in events(receiver, downloaded)),
               what=downloaded)  # fmt: skip
    event = next(e for e in events(receiver, downloaded) if e["data"]["url"] == url)
    assert event["data"]["size"] == len(PNG_BYTES)
    assert event["data"]["local_path"].startswith(str(gateway.input_dir))
    assert event["data"]["duration"] >= 0
    # ComfyUI's events as their receivers read them (data.data.prompt_id), and as ours do
    eventually(lambda: any(e["data"]["prompt_id"] == answer["id"]
                           for e in events(receiver, "comfy.execution_success")),
               what="comfy.execution_success")  # fmt: skip
    done = next(e for e in events(receiver, "comfy.execution_success")
                if e["data"]["prompt_id"] == answer["id"])  # fmt: skip
    assert done["data"]["type"] == "execution_success"
    assert done["data"]["data"]["prompt_id"] == answer["id"]


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("s3://elsewhere/green.png", "is not one this gateway's S3 credentials serve"),
        ("s3://inputs/missing.png", "S3 answered NoSuchKey"),
        ("s3://inputs/big.png", "INPUT_MAX_MB"),
        ("s3://inputs", "names a bucket and a key"),
        ("{blob}/private/green.png", "AZURE_STORAGE_CONTAINERS"),
        ("{blob}/pictures/missing.png", "Azure Blob answered BlobNotFound"),
        ("{blob}/pictures", "names a container and a blob"),
        ("http://127.0.0.1:{port}/devstoreaccount2/pictures/in/green.png", "storage account"),
        # not a blob URL by their rule: a plain http URL, held to the address policy
        ("http://127.0.0.1:{port}/otheraccount/pictures/in/green.png", "private, loopback"),
        ("https://otheraccount.blob.core.windows.net/pictures/in/green.png", "storage account"),
    ],
)
def test_a_store_input_that_cannot_be_used_is_a_located_400(
    client: httpx.Client, gateway: Gateway, azurite: Azurite, source: str, words: str
) -> None:
    url = source.format(blob=azurite.endpoint, port=azurite.port)
    response = client.post("/prompt", json={"prompt": load_and_scale(url)})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["location"] == "prompt.10.inputs.image"
    assert words in body["error"]
    assert "Eby8" not in response.text and "test" not in body["error"].split(":")[-1]
    assert_capacity_whole(gateway, client)


def test_convert_output_with_sharps_names(client: httpx.Client) -> None:
    options = {"quality": 70, "chromaSubsampling": "4:4:4", "mozjpeg": True, "effort": 3}
    body = {"prompt": load_and_scale("s3://inputs/pics/green.png"),
            "convert_output": {"format": "jpg", "options": options}}  # fmt: skip
    response = client.post("/prompt", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["filenames"][0].endswith(".jpg")
    assert decode_image(response.json()["images"][0]).format == "JPEG"
    ignored = response.headers["x-convert-output-ignored"]
    assert ignored == (
        "convert_output.options.effort (not a jpeg option), "
        "convert_output.options.mozjpeg (no Pillow equivalent)"
    )
    body["convert_output"] = {"format": "jpg", "options": {"quality": 1000}}
    body["s3"] = {"bucket": "inputs", "prefix": "out/"}
    refused = client.post("/prompt", json=body)
    assert refused.status_code == 400
    assert refused.json()["location"] == "convert_output.options.quality"


def test_an_upload_is_a_file_uploaded_event(
    client: httpx.Client, s3: Any, receiver: Receiver
) -> None:
    body = {"prompt": load_and_scale("s3://inputs/pics/green.png"),
            "s3": {"bucket": "inputs", "prefix": "out/"}}  # fmt: skip
    response = client.post("/prompt", json=body)
    assert response.status_code == 200, response.text
    (url,) = response.json()["images"]
    stored = s3.get_object(Bucket="inputs", Key=url.removeprefix("s3://inputs/"))["Body"].read()
    uploaded = "storage.file_uploaded"
    eventually(lambda: any(e["data"]["url"] == url for e in events(receiver, uploaded)),
               what=uploaded)  # fmt: skip
    event = next(e for e in events(receiver, uploaded) if e["data"]["url"] == url)
    assert event["data"]["size"] == len(stored)
    assert event["data"]["local_path"] == response.json()["filenames"][0]


def test_azure_blob_upload_stores_each_output_and_answers_its_url(
    client: httpx.Client, azurite: Azurite, receiver: Receiver
) -> None:
    """comfyui-api's `azure_blob_upload`: a batch of two, `blob_prefix` with its one leading
    `/` dropped; the answer names each blob's URL, and Azure holds the very bytes."""
    graph = empty_image(0x0000FF)
    graph["1"]["inputs"]["batch_size"] = 2
    upload = {"container": "pictures", "blob_prefix": "/renders/"}
    response = client.post("/prompt", json={"prompt": graph, "azure_blob_upload": upload})
    assert response.status_code == 200, response.text
    names, urls = response.json()["filenames"], response.json()["images"]
    assert len(names) == 2
    assert urls == [f"{azurite.endpoint}/pictures/renders/{name}" for name in names]
    for name in names:
        blob = azurite.get_blob("pictures", f"renders/{name}")
        assert blob.status_code == 200, blob.text
        assert blob.headers["content-type"] == "image/png"
        assert decode_image(base64.b64encode(blob.content).decode()).getpixel((1, 1))[:3] == (
            0, 0, 255,
        )  # fmt: skip
    uploaded = [e["data"]["url"] for e in events(receiver, "storage.file_uploaded")]
    eventually(lambda: all(url in uploaded for url in urls), what="storage.file_uploaded")


@pytest.mark.parametrize("kind", ["s3", "azure"])
def test_a_large_output_is_stored_whole_in_parts(
    client: httpx.Client,
    gateway: Gateway,
    s3: Any,
    azurite: Azurite,
    receiver: Receiver,
    kind: str,
) -> None:
    """12 MiB of noise: S3 gets it as a multipart upload of 8 MiB parts, Azure as 4 MiB blocks
    and their list; each holds the very bytes ComfyUI wrote, and file_uploaded their size."""
    source = gateway.input_dir / "noise.png"
    if not source.exists():  # one for both: LoadImage's result is ComfyUI's to cache
        noise_png(source, 2048)
    upload: dict[str, Any] = (
        {"s3": {"bucket": "inputs", "prefix": "large/"}}
        if kind == "s3"
        else {"azure_blob_upload": {"container": "pictures", "blob_prefix": "large/"}}
    )
    response = client.post("/prompt", json={"prompt": load_and_save("noise.png", kind), **upload})
    assert response.status_code == 200, response.text
    [name], [url] = response.json()["filenames"], response.json()["images"]
    written = (gateway.output_dir / name).read_bytes()  # KEEP_OUTPUTS: ComfyUI's own file
    assert 8 << 20 < len(written) <= 16 << 20
    if kind == "s3":
        stored = s3.get_object(Bucket="inputs", Key=f"large/{name}")
        assert stored["ETag"].strip('"').endswith(f"-{-(-len(written) // PART_BYTES)}")
        assert stored["Body"].read() == written
        assert s3.list_multipart_uploads(Bucket="inputs").get("Uploads", []) == []
    else:
        blob = azurite.get_blob("pictures", f"large/{name}")
        assert blob.content == written
        listing = azurite.signed("GET", f"pictures/large/{name}", query="comp=blocklist")
        assert listing.text.count("<Block>") == -(-len(written) // BLOCK_BYTES)
    uploaded = "storage.file_uploaded"
    eventually(lambda: any(e["data"]["url"] == url for e in events(receiver, uploaded)),
               what=uploaded)  # fmt: skip
    event = next(e for e in events(receiver, uploaded) if e["data"]["url"] == url)
    assert event["data"]["size"] == len(written)


def test_an_async_azure_blob_upload_answers_at_once_and_stores(
    client: httpx.Client, azurite: Azurite
) -> None:
    upload = {"container": "pictures", "blob_prefix": "later-", "async": True}
    body = {"prompt": empty_image(0x00FFFF, prefix="later"), "azure_blob_upload": upload}
    response = client.post("/prompt", json=body)
    assert response.status_code == 202, response.text
    request_id = response.json()["id"]
    eventually(lambda: client.get(f"/prompt/{request_id}").json()["status"] == "succeeded",
               what="the job to succeed")  # fmt: skip
    [url] = client.get(f"/prompt/{request_id}").json()["result"]["images"]
    name = url.removeprefix(f"{azurite.endpoint}/pictures/")
    assert name.startswith("later-later")
    assert azurite.get_blob("pictures", name).status_code == 200


@pytest.mark.parametrize(
    ("upload", "location"),
    [
        ({"container": "private"}, "azure_blob_upload.container"),  # not AZURE_STORAGE_CONTAINERS
        ({"container": "Pictures"}, "azure_blob_upload.container"),  # not a container name
        ({"container": "pictures", "blob": "x"}, "azure_blob_upload.blob"),
    ],
)
def test_an_azure_blob_upload_the_gateway_does_not_serve_is_a_located_400(
    client: httpx.Client, gateway: Gateway, azurite: Azurite, upload: dict[str, str], location: str
) -> None:
    body = {"prompt": empty_image(0x123456, prefix="refused"), "azure_blob_upload": upload}
    response = client.post("/prompt", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["location"] == location
    assert azurite.get_blob("private", "refused_00001_.png").status_code == 404
    assert_capacity_whole(gateway)


def test_two_stores_at_once_is_a_400(client: httpx.Client) -> None:
    body = {"prompt": empty_image(1), "s3": {"bucket": "inputs"},
            "azure_blob_upload": {"container": "pictures"}}  # fmt: skip
    response = client.post("/prompt", json=body)
    assert response.status_code == 400, response.text
    assert "not s3 and azure_blob_upload" in response.json()["error"]
