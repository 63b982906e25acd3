"""Trickle: a real loopback HTTP peer that is slow on purpose, a byte at a time, never silent for
long: it reads a request's body a byte at a time (`reads`), or answers one a byte at a time
(`answers`), for as long as the other side keeps the connection. It counts its connections and
notes when the other side gave each up, so a test sees both the retries and that nothing is held.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


@dataclass
class Connection:
    opened: float
    received: int = 0
    closed: float | None = None  # when the other side gave it up (monotonic)


@dataclass
class Trickle:
    """Listens on 127.0.0.1; `url(path)` is an endpoint of it."""

    mode: Literal["reads", "answers"] = "answers"
    interval_s: float = 0.1  # between two bytes: well under any read timeout
    for_s: float = 120.0  # the most one connection is kept going (a test never waits that long)
    connections: list[Connection] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.mode == "reads":  # a small window: the sender's writes wait on each byte read
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def closed(self) -> bool:
        """Whether the other side has given up every connection it made."""
        with self.lock:
            return all(c.closed is not None for c in self.connections)

    def _accept(self) -> None:
        while self.running:
            try:
                peer, _ = self.sock.accept()
            except OSError:
                return
            connection = Connection(time.monotonic())
            with self.lock:
                self.connections.append(connection)
            threading.Thread(target=self._serve, args=(peer, connection), daemon=True).start()

    def _serve(self, peer: socket.socket, connection: Connection) -> None:
        until = time.monotonic() + self.for_s
        try:
            with peer:
                if self.mode == "reads":
                    self._read_slowly(peer, connection, until)
                else:
                    self._read_head(peer, connection)
                    self._answer_slowly(peer, until)
        except OSError:
            pass  # reset by the other side: it gave up
        with self.lock:
            connection.closed = time.monotonic()

    def _read_slowly(self, peer: socket.socket, connection: Connection, until: float) -> None:
        while self.running and time.monotonic() < until:
            byte = peer.recv(1)
            if not byte:
                return  # the other side closed it
            connection.received += 1
            time.sleep(self.interval_s)

    def _read_head(self, peer: socket.socket, connection: Connection) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = peer.recv(65536)
            if not chunk:
                raise OSError("closed before its request's head")
            data += chunk
        connection.received = len(data)  # the body, if any, is left unread

    def _answer_slowly(self, peer: socket.socket, until: float) -> None:
        """The status line, then a header a byte at a time, never the end of the headers."""
        head = b"HTTP/1.1 200 OK\r\nx-slow: "
        sent = 0
        while self.running and time.monotonic() < until:
            peer.sendall(head[sent : sent + 1] if sent < len(head) else b"a")
            sent += 1
            time.sleep(self.interval_s)
            if _gone(peer):
                return

    def close(self) -> None:
        self.running = False
        self.sock.close()


def _gone(peer: socket.socket) -> bool:
    """Whether the other side closed (readable with nothing to read)."""
    peer.setblocking(False)
    try:
        return peer.recv(65536, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        peer.setblocking(True)


def held(port: int, pid: int | None = None) -> int:
    """How many sockets process `pid` (this one by default) holds connected to 127.0.0.1:port:
    a connection given up and aborted is no longer one of them (the kernel may still drain
    what was sent, but no process holds it)."""
    fds = Path(f"/proc/{pid or os.getpid()}/fd")
    inodes = set()
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, state, inode = fields[2], fields[3], fields[9]
        if remote == f"0100007F:{port:04X}" and inode in inodes and state != "0A":
            count += 1
    return count
