"""Azurite: Microsoft's Azure Storage emulator (npm `azurite`, `make node` installs it into
tests/node/node_modules), its Blob service on a free loopback port with its own folder; and
`put_blob`, which stores a blob there signed with the development account's shared key (written
here from Azure's Shared Key documentation, apart from the gateway's signer)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import subprocess
import time
from email.utils import formatdate
from pathlib import Path

import httpx

from tests.gateway_process import LOOPBACK, free_port

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_binary() -> str:
    found = os.environ.get("AZURITE_BLOB") or str(
        ROOT / "tests/node/node_modules/.bin/azurite-blob"
    )
    if not Path(found).exists():
        raise RuntimeError(f"{found} is missing: `make node` installs azurite into tests/node")
    return found


class Azurite:
    """One azurite-blob process on 127.0.0.1."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.endpoint = f"http://{LOOPBACK}:{self.port}/{ACCOUNT}"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint={self.endpoint};"
        )

    def start(self) -> Azurite:
        args = [
            azurite_binary(), "--blobHost", LOOPBACK, "--blobPort", str(self.port),
            "--location", str(self.workdir), "--silent", "--disableTelemetry",
            "--skipApiVersionCheck",
        ]  # fmt: skip
        with (self.workdir / "azurite.log").open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection((LOOPBACK, self.port), timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("azurite exited: see azurite.log") from None
                time.sleep(0.1)
        raise RuntimeError("azurite did not listen in 60s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)

    def signed(self, method: str, path: str, body: bytes = b"", query: str = "") -> httpx.Response:
        """`method /<path>?<query>` with a Shared Key signature of the test account's own."""
        headers = {
            "x-ms-date": formatdate(usegmt=True),
            "x-ms-version": "2021-08-06",
        }
        if method == "PUT" and query != "restype=container":
            headers["x-ms-blob-type"] = "BlockBlob"
        length = str(len(body)) if body else ""
        canonical = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()))
        params = "".join(
            f"\n{k}:{v}" for k, v in sorted(p.split("=") for p in query.split("&") if p)
        )
        resource = f"/{ACCOUNT}/{ACCOUNT}/{path}{params}"
        to_sign = f"{method}\n\n\n{length}\n\n\n\n\n\n\n\n\n{canonical}{resource}"
        signature = hmac.new(base64.b64decode(KEY), to_sign.encode(), hashlib.sha256).digest()
        headers["Authorization"] = f"SharedKey {ACCOUNT}:{base64.b64encode(signature).decode()}"
        url = f"{self.endpoint}/{path}" + (f"?{query}" if query else "")
        return httpx.request(method, url, content=body, headers=headers)

    def put(self, path: str, body: bytes = b"", *, query: str = "") -> None:
        """PUT `/<path>?<query>` (a container with `restype=container`, or a blob)."""
        response = self.signed("PUT", path, body, query)
        assert response.status_code == 201, (response.status_code, response.text)

    def get_blob(self, container: str, name: str) -> httpx.Response:
        """GET a blob (its bytes and headers), or the error Azurite answers."""
        return self.signed("GET", f"{container}/{name}")

    def put_blob(self, container: str, name: str, body: bytes) -> str:
        """Store a blob (its container made if new); its URL."""
        try:
            self.put(container, query="restype=container")
        except AssertionError as e:
            if "409" not in str(e):
                raise
        self.put(f"{container}/{name}", body)
        return f"{self.endpoint}/{container}/{name}"
