"""A native ComfyUI client, written as ComfyUI's own websockets_api_example.py is, through /comfy.

Only the base URL differs from talking to ComfyUI directly: urllib for HTTP, a websocket with a
clientId, POST /prompt with that client_id, wait for `executing` with `node: null`, then
/history and /view; the input goes up through /upload/image first.
"""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.integration.harness import Gateway, graph


class NativeClient:
    """What a ComfyUI script does, pointed at `base` (`http://host:port/comfy`)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.client_id = str(uuid.uuid4())

    def queue_prompt(self, prompt: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps({"prompt": prompt, "client_id": self.client_id}).encode()
        request = urllib.request.Request(f"{self.base}/prompt", data=data)
        with urllib.request.urlopen(request) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer

    def get(self, path: str, **params: str) -> bytes:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.base}{path}{query}") as response:
            body: bytes = response.read()
            return body

    def upload_image(self, name: str, data: bytes) -> dict[str, Any]:
        boundary = uuid.uuid4().hex
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode() + data
        body += (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\n'.encode()
        )
        body += f"true\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(
            f"{self.base}/upload/image",
            data=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        with urllib.request.urlopen(request) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer


def png(width: int, height: int) -> bytes:
    image = Image.new("RGB", (width, height), (200, 40, 40))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def img2img_graph(image: str) -> dict[str, Any]:
    g = graph("t2i")
    g["8"] = {"class_type": "LoadImage", "inputs": {"image": image}}
    g["9"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["8", 0], "vae": ["1", 2]}}
    g["5"]["inputs"].update(latent_image=["9", 0], denoise=0.6, seed=7)
    g["7"]["inputs"]["filename_prefix"] = "native_client"
    return g


def test_native_client_runs_a_graph_through_comfy(gateway: Gateway) -> None:
    client = NativeClient(f"{gateway.url}/comfy")
    uploaded = client.upload_image(f"native-{uuid.uuid4().hex[:8]}.png", png(64, 64))
    assert client.get("/view", filename=uploaded["name"], type="input") == png(64, 64)

    ws_url = f"ws://127.0.0.1:{gateway.port}/comfy/ws?clientId={client.client_id}"
    with connect(ws_url, open_timeout=10) as ws:
        first = json.loads(ws.recv(timeout=10))
        assert first["type"] == "status"
        prompt_id = client.queue_prompt(img2img_graph(uploaded["name"]))["prompt_id"]
        seen: list[dict[str, Any]] = []
        previews = 0
        while True:
            message = ws.recv(timeout=60)
            if isinstance(message, bytes):
                previews += 1  # the gateway starts ComfyUI with previews (PREVIEW_METHOD)
                continue
            event = json.loads(message)
            seen.append(event)
            data = event["data"]
            if (
                event["type"] == "executing"
                and data["node"] is None
                and data["prompt_id"] == prompt_id
            ):
                break
    steps = [e["data"] for e in seen if e["type"] == "progress"]
    assert [(s["value"], s["max"]) for s in steps] == [(1, 2), (2, 2)]
    assert previews > 0  # its own prompt's latent previews, as ComfyUI sends them
    assert all(s["prompt_id"] == prompt_id for s in steps)

    history = json.loads(client.get(f"/history/{prompt_id}"))[prompt_id]
    # The graph ran as the client wrote it: the gateway rewrites nothing under /comfy.
    assert history["prompt"][2]["7"]["inputs"]["filename_prefix"] == "native_client"
    image = history["outputs"]["7"]["images"][0]
    data = client.get(
        "/view", filename=image["filename"], subfolder=image["subfolder"], type="output"
    )
    assert Image.open(io.BytesIO(data)).size == (64, 64)
    # ComfyUI's own output, which the gateway leaves alone under /comfy: the other tests
    # sharing this gateway expect an empty output folder.
    (gateway.output_dir / image["subfolder"] / image["filename"]).unlink()
    (gateway.input_dir / uploaded["name"]).unlink()


@pytest.mark.parametrize("path", ["/comfy/ws", "/ws"])
def test_a_socket_without_a_client_id_gets_text_only(gateway: Gateway, path: str) -> None:
    """ComfyUI sends a prompt's previews to every socket when it has no client_id; a client
    that named no clientId (ComfyClient.mjs parses every frame as JSON) gets its events only."""
    client = NativeClient(f"{gateway.url}/comfy")
    g = graph("t2i")
    g["5"]["inputs"].update(steps=3, seed=int(uuid.uuid4().int % 10**6))
    with connect(f"ws://127.0.0.1:{gateway.port}{path}", open_timeout=10) as ws:
        body = json.dumps({"prompt": g}).encode()  # no client_id
        request = urllib.request.Request(f"{client.base}/prompt", data=body)
        with urllib.request.urlopen(request) as response:
            prompt_id = json.loads(response.read())["prompt_id"]
        kinds: list[str] = []
        done = False
        while not done:  # until its history is written (`executing` goes to a client_id only)
            try:
                message = ws.recv(timeout=2)
            except TimeoutError:
                message = None
            assert not isinstance(message, bytes), "a binary frame reached it"
            if message is not None:
                event = json.loads(message)
                if (event.get("data") or {}).get("prompt_id") == prompt_id:
                    kinds.append(event["type"])
            done = prompt_id in json.loads(client.get(f"/history/{prompt_id}"))
    assert "progress" in kinds
    history = json.loads(client.get(f"/history/{prompt_id}"))[prompt_id]
    for output in history["outputs"].values():
        for image in output.get("images", []):
            (gateway.output_dir / image["subfolder"] / image["filename"]).unlink()


def test_comfy_endpoints_answer_as_comfyui_does(gateway: Gateway) -> None:
    client = NativeClient(f"{gateway.url}/comfy")
    stats = json.loads(client.get("/system_stats"))
    assert "system" in stats and "devices" in stats
    ksampler = json.loads(client.get("/object_info/KSampler"))
    assert "euler" in ksampler["KSampler"]["input"]["required"]["sampler_name"][0]
    queue = json.loads(client.get("/queue"))
    assert set(queue) == {"queue_running", "queue_pending"}
    assert isinstance(json.loads(client.get("/embeddings")), list)
    assert isinstance(json.loads(client.get("/extensions")), list)
    assert "exec_info" in json.loads(client.get("/prompt"))
    unknown_node = {"1": {"class_type": "NoSuchNode", "inputs": {}}}
    with pytest.raises(urllib.error.HTTPError) as bad:  # ComfyUI's own 400, passed through
        client.queue_prompt(unknown_node)
    with pytest.raises(urllib.error.HTTPError) as direct:  # what ComfyUI itself answers
        NativeClient(gateway.comfy_url).queue_prompt(unknown_node)
    assert bad.value.code == direct.value.code == 400
    # The type differs between versions (invalid_prompt on 0.3.75, missing_node_type later).
    assert json.loads(bad.value.read()) == json.loads(direct.value.read())


def test_body_cap_applies_to_comfy_uploads(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:  # chunked: no Content-Length to refuse up front
        for _ in range(20):
            yield b"0" * 100_000

    refused = client.post(
        "/comfy/upload/image",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert refused.status_code == 413  # the shared gateway's cap is 1 MB
    assert refused.json()["code"] == "payload_too_large"


@pytest.mark.parametrize("path", ["/comfy/ws", "/ws"])
def test_websocket_refuses_the_gateways_own_client_id(gateway: Gateway, path: str) -> None:
    # The gateway's own clientId is in its log line "connected to ComfyUI's event stream".
    line = next(ln for ln in gateway.log_text().splitlines() if "event stream (client_id" in ln)
    taken = line.rsplit("client_id ", 1)[1].rstrip(")")
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{gateway.port}{path}?clientId={taken}", open_timeout=10)
    assert refused.value.response.status_code == 409
