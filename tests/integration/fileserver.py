"""A real HTTP file server for download tests: files (with `Range`), redirects, slow, huge and
cut-off bodies, and a record of every request's headers."""

from __future__ import annotations

import hashlib
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class QuietServer(ThreadingHTTPServer):
    """The gateway hangs up on /slow and /chunked-big by design: that is no error here."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@dataclass
class Seen:
    """One request as it came."""

    path: str
    headers: dict[str, str]

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


@dataclass
class Trickle:
    """A server that lies about its length: it declares `declared` bytes (Range or not), then
    sends `piece` bytes every `every_s` for at most `for_s`, and hangs up. `sent` counts what
    left it, over every connection."""

    declared: int
    piece: int = 100
    every_s: float = 0.1
    for_s: float = 60.0
    sent: int = 0

    def send(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(self.declared))
        handler.end_headers()
        handler.close_connection = True
        deadline = time.monotonic() + self.for_s
        while time.monotonic() < deadline:
            try:
                handler.wfile.write(bytes(self.piece))
                handler.wfile.flush()
            except OSError:
                return  # the client hung up: what a trickle is for
            self.sent += self.piece
            time.sleep(self.every_s)


class FileServer:
    """Serves `files[path]` (honouring `Range: bytes=N-`, with an ETag); `redirects[path]`
    answers 302; `cuts[path]` lists how many bytes each of the next answers sends before the
    connection drops (the full Content-Length announced); `rates[path]` caps bytes a second;
    `announced[path]` answers 200 with that Content-Length and no body; `guards[path]` answers
    401 unless it accepts the request (a query string after the path is allowed; HEAD too);
    `trickles[path]` lies about its length and trickles (Trickle); /slow trickles;
    /chunked-big streams 4 MiB without a length. `seen` records every request."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.files: dict[str, bytes] = {}
        self.redirects: dict[str, str] = {}
        self.cuts: dict[str, list[int]] = {}
        self.rates: dict[str, int] = {}
        self.announced: dict[str, int] = {}
        self.trickles: dict[str, Trickle] = {}
        self.dispositions: dict[str, str] = {}
        # Paths (without query) a request reaches only when its guard says yes: else 401.
        self.guards: dict[str, Callable[[Seen], bool]] = {}
        self.hits: Counter[str] = Counter()
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def refused(self) -> bool:
                """Answer 401 to a guarded path whose guard says no."""
                guard = server.guards.get(self.path.split("?", 1)[0])
                if guard is None or guard(Seen(self.path, dict(self.headers.items()))):
                    return False
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return True

            def do_HEAD(self) -> None:
                with server.lock:
                    server.seen.append(Seen(self.path, dict(self.headers.items())))
                if self.refused():
                    return
                body = server.files.get(self.path.split("?", 1)[0])
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()

            def do_GET(self) -> None:
                with server.lock:
                    server.hits[self.path] += 1
                    server.seen.append(Seen(self.path, dict(self.headers.items())))
                if self.refused():
                    return
                bare = self.path.split("?", 1)[0]
                if bare in server.guards and bare in server.files:
                    self.send_file(server.files[bare])
                elif self.path in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif self.path == "/slow":
                    self.send_response(200)
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    for _ in range(100):  # 10 bytes a second: far past any sane deadline
                        self.wfile.write(b"\x89PNG\r\n\x1a\n\x00\x00"[:10])
                        self.wfile.flush()
                        time.sleep(1)
                elif self.path == "/chunked-big":
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    chunk = b"\x89PNG\r\n\x1a\n" + bytes(65528)
                    for _ in range(64):  # 4 MiB, no Content-Length
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.write(b"0\r\n\r\n")
                elif self.path in server.trickles:
                    server.trickles[self.path].send(self)
                elif self.path in server.announced:
                    self.send_response(200)
                    self.send_header("Content-Length", str(server.announced[self.path]))
                    self.end_headers()
                    self.close_connection = True
                elif self.path in server.files:
                    self.send_file(server.files[self.path])
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

            def send_file(self, body: bytes) -> None:
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                start = 0
                ranged = RANGE.match(self.headers.get("Range", ""))
                if_range = self.headers.get("If-Range")
                if ranged and (if_range is None or if_range == etag):
                    start = int(ranged.group(1))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("ETag", etag)
                if self.path in server.dispositions:
                    name = server.dispositions[self.path]
                    self.send_header("Content-Disposition", f'attachment; filename="{name}"')
                self.end_headers()
                with server.lock:
                    cuts = server.cuts.get(self.path)
                    cut = cuts.pop(0) if cuts else None
                end = len(body) if cut is None else min(start + cut, len(body))
                rate = server.rates.get(self.path)
                piece = 64 * 1024
                for offset in range(start, end, piece):
                    self.wfile.write(body[offset : min(offset + piece, end)])
                    if rate:
                        time.sleep(piece / rate)
                if cut is not None:
                    self.wfile.flush()
                    self.close_connection = True  # the rest never comes

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = QuietServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.host = host
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def requests_for(self, path: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
