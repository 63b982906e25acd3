"""An example webhook receiver for comfy-gateway: verifies, logs, and saves the outputs.

Standard library only, so it runs on any Python 3.11 image. It accepts both kinds of delivery:
`webhook_v2` (`prompt.complete` with every output, or `prompt.failed`) and the legacy `webhook`
(`output.complete` per output file, or `prompt.failed`). Every delivery is checked against
WEBHOOK_SECRET by the Standard Webhooks scheme (the gateway's WEBHOOK_SECRET, the same value)
and refused with 401 if it does not match or is older than five minutes; without a secret it
accepts unsigned deliveries and says so. Outputs are written to OUT_DIR/<job id>/<filename>.

    WEBHOOK_SECRET=whsec_... OUT_DIR=./received PORT=8000 python receiver.py

Answer fast: the gateway waits for the answer (WEBHOOK_TIMEOUT_S) and retries on 5xx and
timeouts. Real receivers hand the work to a queue and answer 2xx at once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

TOLERANCE_S = 300
log = logging.getLogger("receiver")


def decode_secret(secret: str) -> bytes:
    raw = secret.removeprefix("whsec_")
    return base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)


def verify(key: bytes, headers: dict[str, str], body: bytes, now: float | None = None) -> bool:
    """True if one of `webhook-signature`'s v1 signatures signs `id.timestamp.body` with key."""
    msg_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    if not msg_id or not timestamp.isdigit():
        return False
    if abs((now if now is not None else time.time()) - int(timestamp)) > TOLERANCE_S:
        return False  # a replay of an old delivery
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = hmac.new(key, signed, hashlib.sha256).digest()
    for signature in headers.get("webhook-signature", "").split():
        version, _, value = signature.partition(",")
        try:
            given = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if version == "v1" and hmac.compare_digest(given, expected):
            return True
    return False


def safe_name(name: str) -> str:
    """A file name that cannot leave its folder."""
    cleaned = Path(name).name.strip().lstrip(".")
    return cleaned or "output"


def save(out_dir: Path, payload: dict[str, Any]) -> list[Path]:
    """Write the outputs a delivery carries; return their paths."""
    job_dir = out_dir / safe_name(str(payload.get("id", "unknown")))
    files: list[tuple[str, str]] = []
    if payload.get("type") == "prompt.complete":
        files = list(zip(payload.get("filenames", []), payload.get("images", []), strict=False))
    elif payload.get("event") == "output.complete":
        files = [(payload.get("filename", "output"), payload.get("image", ""))]
    written = []
    for filename, content in files:
        job_dir.mkdir(parents=True, exist_ok=True)
        path = job_dir / safe_name(filename)
        path.write_bytes(base64.b64decode(content))
        written.append(path)
    return written


def make_handler(key: bytes | None, out_dir: Path) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            if key is not None and not verify(key, headers, body):
                log.warning("refused a delivery with a bad or old signature")
                self.answer(401)
                return
            try:
                payload = json.loads(body)
            except ValueError:
                self.answer(400)
                return
            kind = payload.get("type") or payload.get("event")
            written = save(out_dir, payload)
            log.info(
                "%s for job %s: %s",
                kind,
                payload.get("id"),
                ", ".join(str(p) for p in written) or payload.get("error", "no files"),
            )
            self.answer(204)

        def do_GET(self) -> None:  # a health check for compose
            self.answer(200 if self.path == "/health" else 404)

        def answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per delivery above is enough

    return Handler


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    secret = os.environ.get("WEBHOOK_SECRET", "")
    key = decode_secret(secret) if secret else None
    if key is None:
        log.warning("WEBHOOK_SECRET is not set: accepting unsigned deliveries")
    out_dir = Path(os.environ.get("OUT_DIR", "received"))
    port = int(os.environ.get("PORT", "8000"))
    server = ThreadingHTTPServer(("", port), make_handler(key, out_dir))
    log.info("listening on :%d, writing outputs to %s", port, out_dir)
    server.serve_forever()


if __name__ == "__main__":
    main()
