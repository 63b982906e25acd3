"""A real HTTP webhook receiver for tests: records every delivery, answers as scripted."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Script:
    """How one path answers: these statuses in turn (then 200), after these delays in turn."""

    statuses: list[int] = field(default_factory=list)
    delays_s: list[float] = field(default_factory=list)


class CountingServer(ThreadingHTTPServer):
    """Counts every connection it accepts, whatever comes over it (HTTP or not)."""

    connections = 0

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.connections += 1
        return True


class CountingServer6(CountingServer):
    address_family = socket.AF_INET6


class Receiver:
    """Listens on 127.0.0.1 (or another loopback address, ::1 too); `url(path)` names an endpoint;
    `deliveries(path)` what came; `connections` counts every connection, even one never a request.
    """

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self.records: list[Delivery] = []
        self.scripts: dict[str, Script] = {}
        self.refused_prefixes: dict[str, int] = {}  # every path under one answers this status
        self.redirects: dict[str, str] = {}  # path -> where a 302 sends the client
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    receiver.records.append(
                        Delivery(self.path, dict(self.headers.items()), body, time.monotonic())
                    )
                    script = receiver.scripts.get(self.path, Script())
                    status = script.statuses.pop(0) if script.statuses else 200
                    for prefix, refusal in receiver.refused_prefixes.items():
                        if self.path.startswith(prefix):
                            status = refusal
                    delay_s = script.delays_s.pop(0) if script.delays_s else 0.0
                    location = receiver.redirects.get(self.path)
                time.sleep(delay_s)
                self.send_response(302 if location else status)
                if location:
                    self.send_header("location", location)
                self.send_header("content-length", "0")
                self.end_headers()

            do_PUT = do_POST  # uploads: recorded and answered the same way
            do_GET = do_DELETE = do_PATCH = do_POST  # anything else, so that nothing goes unseen

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = CountingServer6 if ":" in host else CountingServer
        self.server = server((host, port), Handler)
        self.server.daemon_threads = True
        self.host = host
        self.port = self.server.server_address[1]
        # A short poll keeps close() quick: tests start and stop receivers by the dozen.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def url(self, path: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"

    @property
    def connections(self) -> int:
        return self.server.connections

    def script(self, path: str, *statuses: int, delays_s: tuple[float, ...] = ()) -> str:
        self.scripts[path] = Script(list(statuses), list(delays_s))
        return self.url(path)

    def deliveries(self, path: str) -> list[Delivery]:
        with self.lock:
            return [d for d in self.records if d.path == path]

    def wait_for(self, path: str, count: int, timeout_s: float = 60) -> list[Delivery]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.deliveries(path)
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{path}: {len(self.deliveries(path))} deliveries, wanted {count}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def loopback_traps() -> list[Receiver]:
    """Receivers on one port at 127.0.0.1, 127.0.0.2 and ::1: every loopback address a URL can
    spell (0.0.0.0 and ::ffff:127.0.0.1 reach 127.0.0.1), so whatever is sent to it is counted."""
    for _ in range(20):
        made = [Receiver(0, "127.0.0.1")]
        try:
            made += [Receiver(made[0].port, host) for host in ("127.0.0.2", "::1")]
        except OSError:  # that port is taken at one of the other addresses: another one
            for receiver in made:
                receiver.close()
            continue
        return made
    raise RuntimeError("no port is free at 127.0.0.1, 127.0.0.2 and ::1 at once")
