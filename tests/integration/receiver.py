"""A real HTTP webhook receiver for tests: records every delivery, answers as scripted."""

from __future__ import annotations

import json
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


class Receiver:
    """Listens on 127.0.0.1; `url(path)` names an endpoint; `deliveries(path)` what came."""

    def __init__(self, port: int = 0) -> None:
        self.records: list[Delivery] = []
        self.scripts: dict[str, Script] = {}
        self.refused_prefixes: dict[str, int] = {}  # every path under one answers this status
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
                time.sleep(delay_s)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            do_PUT = do_POST  # uploads: recorded and answered the same way

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

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
