"""Inputs by URL and base64, output conversion, and every output kind, against a real ComfyUI."""

from __future__ import annotations

import base64
import io
import math
import os
import struct
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.integration.fileserver import FileServer
from tests.integration.harness import Gateway, running
from tests.integration.receiver import Receiver, loopback_traps
from tests.integration.test_addresses import SPELLINGS
from tests.integration.test_prompt import decode_image, empty_image
from tests.s3_server import s3_server


def encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


PICTURE = Image.new("RGB", (48, 40), (10, 200, 30))
PNG_BYTES = encoded(PICTURE, "PNG")
WAV_BYTES = b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00" + bytes(24)


def tone(seconds: float = 0.25, rate: int = 8000) -> bytes:
    """A real mono 16-bit WAV: a 440 Hz sine."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        samples = (
            int(12000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(int(seconds * rate))
        )
        wav.writeframes(b"".join(struct.pack("<h", v) for v in samples))
    return out.getvalue()


TONE = tone()


@pytest.fixture(scope="module")
def files() -> Iterator[FileServer]:
    # 127.0.0.2 is the one private address the module's gateway may reach: a stand-in for a
    # public host, so that a redirect from it to 127.0.0.1 tests the check on each hop.
    server = FileServer("127.0.0.2")
    server.files["/picture.png"] = PNG_BYTES
    server.files["/tone.wav"] = TONE
    server.files["/big.png"] = b"\x89PNG\r\n\x1a\n" + bytes(2 * 2**20)
    server.redirects["/moved"] = server.url("/picture.png")
    server.redirects["/to-loopback"] = f"http://127.0.0.1:{server.port}/picture.png"
    server.redirects["/loop"] = server.url("/loop")
    yield server
    server.close()


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    """A real S3-compatible server (moto) on loopback, and a boto3 client for it."""
    with s3_server("renders") as server:
        yield server.client()


@pytest.fixture(scope="module")
def store() -> Iterator[Receiver]:
    """A real HTTP server that accepts PUTs (and, scripted, refuses them), and webhooks.

    On 127.0.0.2, like the file server: the one private address the module's gateway may reach.
    """
    receiver = Receiver(host="127.0.0.2")
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def traps() -> Iterator[list[Receiver]]:
    made = loopback_traps()
    yield made
    for receiver in made:
        receiver.close()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, s3: Any, store: Receiver
) -> Iterator[Gateway]:
    env = {
        "ALLOWED_PRIVATE_NETWORKS": "127.0.0.2/32",
        "INPUT_MAX_MB": "1",
        "INPUT_DOWNLOAD_TIMEOUT_S": "3",
        "AWS_ENDPOINT_URL": s3.meta.endpoint_url,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "HTTP_UPLOAD_AUTH_HEADER": "Authorization: Bearer upload-token",
        "HTTP_UPLOAD_AUTH_PREFIXES": store.url("/bucket/"),  # the header goes there only
        "KEEP_OUTPUTS": "true",  # ComfyUI's own copy stays, for an upload to be compared with
    }
    with running(tmp_path_factory.mktemp("media"), **env) as gw:
        yield gw


def load_and_scale(*sources: str, width: int = 24, height: int = 20) -> dict[str, Any]:
    """One LoadImage → ImageScale → SaveImage chain per source."""
    graph: dict[str, Any] = {}
    for i, source in enumerate(sources):
        base = 10 * (i + 1)
        graph[str(base)] = {"class_type": "LoadImage", "inputs": {"image": source}}
        graph[str(base + 1)] = {
            "class_type": "ImageScale",
            "inputs": {"image": [str(base), 0], "upscale_method": "nearest-exact",
                       "width": width, "height": height, "crop": "disabled"},
        }  # fmt: skip
        graph[str(base + 2)] = {
            "class_type": "SaveImage",
            "inputs": {"images": [str(base + 1), 0], "filename_prefix": "in"},
        }
    return graph


def noise_png(path: Path, side: int) -> None:
    """A PNG of side x side random RGB pixels: incompressible, about 3 bytes a pixel."""
    pixels = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    pixels.save(path, compress_level=1)


def load_and_save(image: str, prefix: str) -> dict[str, Any]:
    """LoadImage → SaveImage: ComfyUI writes the input's pixels again, as large as they are."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def input_leftovers(gateway: Gateway) -> list[Path]:
    return [
        p
        for p in gateway.input_dir.rglob("*")
        if p.parts[-2].startswith("gw-") or p.name.startswith("gw-")
    ]


def test_url_input_is_downloaded_once_and_removed_after(
    client: httpx.Client, gateway: Gateway, files: FileServer
) -> None:
    url = files.url("/picture.png")
    response = client.post("/prompt", json={"prompt": load_and_scale(url, url)})
    assert response.status_code == 200, response.text
    images = [decode_image(b).convert("RGB") for b in response.json()["images"]]
    assert [i.size for i in images] == [(24, 20), (24, 20)]
    assert images[0].getpixel((3, 3)) == (10, 200, 30)
    assert files.hits["/picture.png"] == 1
    rewritten = response.json()["prompt"]["10"]["inputs"]["image"]
    assert rewritten.startswith("gw-") and rewritten.endswith(".png")
    assert input_leftovers(gateway) == []


def test_redirect_is_followed(client: httpx.Client, files: FileServer) -> None:
    response = client.post("/prompt", json={"prompt": load_and_scale(files.url("/moved"))})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/to-loopback", "private, loopback or link-local"),
        ("/loop", "redirects"),
        ("/missing.png", "HTTP 404"),
        ("/big.png", "INPUT_MAX_MB"),
        ("/chunked-big", "INPUT_MAX_MB"),
        ("/slow", "took longer than 3s"),
    ],
)
def test_url_that_cannot_be_used_is_a_located_400(
    client: httpx.Client, files: FileServer, path: str, words: str
) -> None:
    response = client.post("/prompt", json={"prompt": load_and_scale(files.url(path))})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["location"] == "prompt.10.inputs.image"
    assert words in body["error"]


# Only loopback is ever aimed at, however spelled; the other private ranges (169.254.169.254
# included) are the address check's unit tests, so that a regression sends nothing anywhere.
@pytest.mark.parametrize("host", list(SPELLINGS))
def test_private_address_is_refused_by_default(
    shared_gateway: Gateway, traps: list[Receiver], host: str
) -> None:
    url = f"http://{host}:{traps[0].port}/picture.png"
    response = httpx.post(
        f"{shared_gateway.url}/prompt", json={"prompt": load_and_scale(url)}, timeout=30
    )
    assert response.status_code == 400
    assert response.json()["location"] == "prompt.10.inputs.image"
    assert "ALLOW_PRIVATE_URLS" in response.json()["error"]
    assert SPELLINGS[host] in response.json()["error"]
    assert [t.connections for t in traps] == [0, 0, 0]


@pytest.mark.parametrize(
    "value",
    [
        base64.b64encode(PNG_BYTES).decode(),
        "data:image/png;base64," + base64.b64encode(PNG_BYTES).decode(),
        "data:image/png;base64," + base64.b64encode(encoded(PICTURE, "JPEG")).decode(),
        base64.b64encode(encoded(PICTURE, "WEBP")).decode(),
        base64.b64encode(encoded(PICTURE, "JPEG")).decode(),  # starts with "/9j/"
    ],
    ids=["png", "png-data-url", "jpeg-under-a-png-prefix", "webp", "raw-jpeg"],
)
def test_base64_inputs(client: httpx.Client, value: str) -> None:
    response = client.post("/prompt", json={"prompt": load_and_scale(value)})
    assert response.status_code == 200, response.text
    pixel = decode_image(response.json()["images"][0]).convert("RGB").getpixel((3, 3))
    assert all(abs(a - b) < 12 for a, b in zip(pixel, (10, 200, 30), strict=True))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("/etc/passwd", "path"),
        ("../secret.png", "path"),
        ("ftp://example.com/a.png", "ftp"),
        ("file:///etc/passwd", "file"),
        ("%%% not base64 %%%", "base64"),
        (base64.b64encode(WAV_BYTES).decode(), "expected image, got audio"),
        (base64.b64encode(b"just some text, nothing to load").decode(), "expected image"),
    ],
)
def test_unusable_input_values_are_located_400s(
    client: httpx.Client, gateway: Gateway, value: str, words: str
) -> None:
    response = client.post("/prompt", json={"prompt": load_and_scale(value)})
    assert response.status_code == 400, response.text
    assert response.json()["location"] == "prompt.10.inputs.image"
    assert words in response.json()["error"]
    assert input_leftovers(gateway) == []


def test_input_files_are_removed_after_a_failure(
    client: httpx.Client, gateway: Gateway, files: FileServer
) -> None:
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": files.url("/picture.png")}},
        "2": {"class_type": "ImageToMask", "inputs": {"image": ["1", 0], "channel": "alpha"}},
        "3": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "x"}},
    }
    response = client.post("/prompt", json={"prompt": graph})
    assert response.status_code == 502, response.text
    assert input_leftovers(gateway) == []


@pytest.mark.parametrize(
    ("spec", "pillow", "suffix"),
    [
        ({"format": "jpeg", "options": {"quality": 70, "progressive": True}}, "JPEG", ".jpeg"),
        ({"format": "webp", "options": {"lossless": True}}, "WEBP", ".webp"),
        ({"format": "png", "options": {"compress_level": 9}}, "PNG", ".png"),
    ],
)
def test_convert_output(
    client: httpx.Client, spec: dict[str, Any], pillow: str, suffix: str
) -> None:
    response = client.post(
        "/prompt", json={"prompt": empty_image(0x3366CC), "convert_output": spec}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    image = decode_image(body["images"][0])
    assert image.format == pillow
    assert image.size == (64, 64)
    assert body["filenames"][0].endswith(suffix)


@pytest.mark.parametrize(
    ("spec", "location"),
    [
        ({"format": "jpeg", "options": {"quality": 101}}, "convert_output.options.quality"),
        # sharp's names are accepted for any format (comfyui-api's); a name neither knows is not
        ({"format": "png", "options": {"qualty": 50}}, "convert_output.options.qualty"),
        ({"format": "bmp"}, "convert_output"),
    ],
)
def test_bad_convert_output_is_a_400_naming_the_option(
    client: httpx.Client, spec: dict[str, Any], location: str
) -> None:
    response = client.post("/prompt", json={"prompt": empty_image(1), "convert_output": spec})
    assert response.status_code == 400
    assert response.json()["location"] == location


def test_two_output_nodes_and_a_batch_in_order(client: httpx.Client) -> None:
    graph = empty_image(0xFF0000, width=8, height=8)
    graph["1"]["inputs"]["batch_size"] = 4
    graph["10"] = {
        "class_type": "EmptyImage",
        "inputs": {"width": 12, "height": 12, "batch_size": 1, "color": 255},
    }
    graph["9"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["10", 0], "filename_prefix": "second"},
    }
    graph["11"] = {"class_type": "PreviewImage", "inputs": {"images": ["10", 0]}}
    response = client.post("/prompt", json={"prompt": graph})
    assert response.status_code == 200, response.text
    body = response.json()
    sizes = [decode_image(b).size for b in body["images"]]
    assert sizes == [(8, 8)] * 4 + [(12, 12)]  # node 2, then node 9; no temp preview
    assert len(set(body["filenames"])) == 5


def three_colour_frames() -> dict[str, Any]:
    """A batch of three different 16x16 frames (identical ones would be merged by encoders)."""
    graph: dict[str, Any] = {}
    for node, colour in (("11", 0xFF0000), ("12", 0x00FF00), ("13", 0x0000FF)):
        inputs = {"width": 16, "height": 16, "batch_size": 1, "color": colour}
        graph[node] = {"class_type": "EmptyImage", "inputs": inputs}
    graph["14"] = {"class_type": "ImageBatch", "inputs": {"image1": ["11", 0], "image2": ["12", 0]}}
    graph["1"] = {"class_type": "ImageBatch", "inputs": {"image1": ["14", 0], "image2": ["13", 0]}}
    return graph


def test_animated_output_keeps_its_frames(client: httpx.Client) -> None:
    graph = three_colour_frames()
    graph["2"] = {
        "class_type": "SaveAnimatedWEBP",
        "inputs": {"images": ["1", 0], "filename_prefix": "anim", "fps": 6.0,
                   "lossless": True, "quality": 80, "method": "default"},
    }  # fmt: skip
    for spec in (None, {"format": "webp"}):
        response = client.post("/prompt", json={"prompt": graph, "convert_output": spec})
        assert response.status_code == 200, response.text
        image = decode_image(response.json()["images"][0])
        assert image.format == "WEBP"
        assert getattr(image, "n_frames", 1) == 3


def test_video_output_is_returned_unconverted(client: httpx.Client, store: Receiver) -> None:
    graph = empty_image(0x0000FF, width=32, height=32)
    graph["1"]["inputs"]["batch_size"] = 8
    graph["3"] = {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 8.0}}
    graph["2"] = {
        "class_type": "SaveVideo",
        "inputs": {"video": ["3", 0], "filename_prefix": "clip", "format": "mp4", "codec": "h264"},
    }
    response = client.post("/prompt", json={"prompt": graph, "convert_output": {"format": "jpeg"}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["filenames"][0].endswith(".mp4")
    assert base64.b64decode(body["images"][0])[4:8] == b"ftyp"

    # Stored elsewhere, it keeps its kind: the store is told it is a video.
    upload = {"prompt": graph, "http_upload": {"url_prefix": store.url("/videos/")}}
    response = client.post("/prompt", json=upload)
    assert response.status_code == 200, response.text
    [put] = store.deliveries("/videos/" + response.json()["filenames"][0])
    assert put.headers["content-type"] == "video/mp4"
    assert put.body[4:8] == b"ftyp"


@pytest.mark.parametrize("via", ["base64", "url"])
def test_audio_in_and_out(client: httpx.Client, files: FileServer, via: str) -> None:
    """A WAV sent as base64 or by URL → LoadAudio → SaveAudio, returned as the audio file."""
    nodes = client.get("/comfy/object_info").json()
    if "LoadAudio" not in nodes:
        pytest.skip(
            "this ComfyUI has no LoadAudio: its audio nodes need torchaudio, which the bundled "
            "0.3.75 environment does not install (0.33 requires it)"
        )
    source = base64.b64encode(TONE).decode() if via == "base64" else files.url("/tone.wav")
    graph = {
        "1": {"class_type": "LoadAudio", "inputs": {"audio": source}},
        "2": {"class_type": "SaveAudio", "inputs": {"audio": ["1", 0], "filename_prefix": "tone"}},
    }
    response = client.post("/prompt", json={"prompt": graph})
    assert response.status_code == 200, response.text
    body = response.json()
    [name] = body["filenames"]
    assert name.startswith("tone") and name.endswith(".flac")
    flac = base64.b64decode(body["images"][0])
    assert flac[:4] == b"fLaC"
    # STREAMINFO, the first metadata block: 20 bits of sample rate after 10 bytes of sizes.
    assert int.from_bytes(flac[18:21], "big") >> 4 == 8000


def s3_object(s3: Any, uri: str) -> bytes:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


def test_s3_upload_puts_each_output_and_answers_with_uris(client: httpx.Client, s3: Any) -> None:
    prompt = empty_image(0x00FFFF, width=20, height=10)
    prompt["1"]["inputs"]["batch_size"] = 2
    body = {"prompt": prompt, "s3": {"bucket": "renders", "prefix": "jobs/a/"},
            "convert_output": {"format": "jpeg"}}  # fmt: skip
    response = client.post("/prompt", json=body)
    assert response.status_code == 200, response.text
    uris = response.json()["images"]
    names = response.json()["filenames"]
    assert [u.rsplit("/", 1)[1] for u in uris] == names
    assert all(u.startswith("s3://renders/jobs/a/") and u.endswith(".jpeg") for u in uris)
    for uri in uris:
        image = decode_image(base64.b64encode(s3_object(s3, uri)).decode())
        assert (image.format, image.size) == ("JPEG", (20, 10))


def test_async_s3_upload_answers_at_once_and_webhooks_after(
    client: httpx.Client, s3: Any, store: Receiver
) -> None:
    body = {"prompt": empty_image(5), "id": "s3-async", "s3": {"bucket": "renders", "async": True},
            "webhook_v2": store.url("/s3-done")}  # fmt: skip
    response = client.post("/prompt", json=body)
    assert response.status_code == 202, response.text
    payload = store.wait_for("/s3-done", 1)[0].json()
    assert payload["type"] == "prompt.complete"
    [uri] = payload["images"]
    assert s3_object(s3, uri).startswith(b"\x89PNG")  # stored before the webhook went out


def test_refused_s3_write_is_a_502_or_a_prompt_failed(
    client: httpx.Client, store: Receiver
) -> None:
    body = {"prompt": empty_image(6), "s3": {"bucket": "no-such-bucket"}}
    response = client.post("/prompt", json=body)
    assert response.status_code == 502, response.text
    assert response.json()["code"] == "upload_failed"
    assert "NoSuchBucket" in response.json()["error"]
    assert response.json()["details"]["filename"].endswith(".png")

    later = {**body, "id": "s3-refused", "s3": {"bucket": "no-such-bucket", "async": True},
             "webhook_v2": store.url("/s3-refused")}  # fmt: skip
    assert client.post("/prompt", json=later).status_code == 202
    payload = store.wait_for("/s3-refused", 1)[0].json()
    assert payload["type"] == "prompt.failed"
    assert payload["code"] == "upload_failed"


def test_http_upload_puts_with_the_configured_header(client: httpx.Client, store: Receiver) -> None:
    body = {"prompt": empty_image(0xFF00FF), "http_upload": {"url_prefix": store.url("/bucket/")}}
    response = client.post("/prompt", json=body)
    assert response.status_code == 200, response.text
    [url] = response.json()["images"]
    assert url == store.url("/bucket/" + response.json()["filenames"][0])
    [put] = store.deliveries("/bucket/" + response.json()["filenames"][0])
    assert put.headers["Authorization"] == "Bearer upload-token"
    assert put.headers["content-type"] == "image/png"
    assert decode_image(base64.b64encode(put.body).decode()).size == (64, 64)


def test_a_large_output_is_put_whole_with_its_length(
    client: httpx.Client, gateway: Gateway, store: Receiver
) -> None:
    """A few MiB of noise, streamed from the gateway's spool in pieces: one PUT, not chunked,
    the very bytes ComfyUI wrote."""
    noise_png(gateway.input_dir / "noise.png", 1024)
    body = {"prompt": load_and_save("noise.png", "noise"),
            "http_upload": {"url_prefix": store.url("/large/")}}  # fmt: skip
    response = client.post("/prompt", json=body)
    assert response.status_code == 200, response.text
    [name] = response.json()["filenames"]
    written = (gateway.output_dir / name).read_bytes()  # KEEP_OUTPUTS: ComfyUI's own file
    assert len(written) > 3 * 2**20
    [put] = store.deliveries(f"/large/{name}")
    headers = {key.lower(): value for key, value in put.headers.items()}
    assert (headers["content-length"], "transfer-encoding" in headers) == (str(len(written)), False)
    assert put.body == written


def test_http_upload_joins_the_prefix_and_the_name_with_one_slash(
    client: httpx.Client, store: Receiver
) -> None:
    """comfyui-api's join: `url_prefix` without its trailing `/`s, `/`, the file name."""
    for prefix, folder in ((store.url("/bucket/joined"), "/bucket/joined/"),
                           (store.url("/bucket/twice//"), "/bucket/twice/")):  # fmt: skip
        body = {"prompt": empty_image(0x00FF00), "http_upload": {"url_prefix": prefix}}
        response = client.post("/prompt", json=body)
        assert response.status_code == 200, response.text
        [name] = response.json()["filenames"]
        assert response.json()["images"] == [store.url(folder + name)]
        [put] = store.deliveries(folder + name)
        assert put.headers["Authorization"] == "Bearer upload-token"


def test_http_store_refusing_writes_is_a_502(
    client: httpx.Client, gateway: Gateway, store: Receiver
) -> None:
    """The store is at a private address (allowed): what it answered goes to the log only."""
    store.refused_prefixes["/readonly/"] = 403
    body = {"prompt": empty_image(7), "http_upload": {"url_prefix": store.url("/readonly/")}}
    response = client.post("/prompt", json=body)
    assert response.status_code == 502, response.text
    assert response.json()["code"] == "upload_failed"
    [path] = [d.path for d in store.records if d.path.startswith("/readonly/")]
    filename = path.removeprefix("/readonly/")
    assert response.json()["details"] == {"filename": filename}
    # The URL's port or the file's name may hold "403" by chance; nothing else may.
    assert "403" not in response.text.replace(store.url(path), "").replace(filename, "")
    assert f"PUT to {store.url(path)} (127.0.0.2) failed: HTTP 403" in gateway.log_text()


def test_upload_to_an_address_not_allowed_is_a_located_400(
    client: httpx.Client, traps: list[Receiver]
) -> None:
    """ALLOWED_PRIVATE_NETWORKS=127.0.0.2/32 lets that address through, and no other."""
    prefix = traps[0].url("/store/")  # 127.0.0.1
    response = client.post(
        "/prompt", json={"prompt": empty_image(10), "http_upload": {"url_prefix": prefix}}
    )
    assert response.status_code == 400, response.text
    assert response.json()["location"] == "http_upload.url_prefix"
    assert "127.0.0.1" in response.json()["error"]
    assert [t.connections for t in traps] == [0, 0, 0]


def test_one_store_at_a_time(client: httpx.Client) -> None:
    body = {"prompt": empty_image(8), "s3": {"bucket": "renders"},
            "http_upload": {"url_prefix": "http://127.0.0.1:9/"}}  # fmt: skip
    response = client.post("/prompt", json=body)
    assert response.status_code == 400
    assert "not s3 and http_upload" in response.json()["error"]
