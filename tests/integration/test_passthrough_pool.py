"""No number of slow passthrough clients stops a job (issue 20, class 5): the /comfy passthrough
has connections of its own to ComfyUI (PASSTHROUGH_MAX_CONNECTIONS) and a deadline on each wait
(PASSTHROUGH_TIMEOUT_S, PASSTHROUGH_BODY_TIMEOUT_S).

A gateway of its own, with four passthrough connections and three-second timeouts, and more slow
clients than the jobs' pool has connections (64): request bodies that never finish, sent as they
come (an admin key) or read before anything goes on (a key), and answers never read.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

from tests.integration.harness import Gateway, assert_capacity_whole, graph, running
from tests.integration.tenants import ADMIN, ALICE, client

SLOW_BODIES = 70  # of each kind: past the 64 connections the jobs' pool has
UNREAD = 10
BIG = 32 * 2**20  # an answer far larger than what the sockets between hold


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    settings = {
        "API_KEYS": f"alice:{ALICE}",
        "ADMIN_API_KEYS": f"ops:{ADMIN}",
        "PASSTHROUGH_MAX_CONNECTIONS": "4",
        "PASSTHROUGH_TIMEOUT_S": "3",
        "PASSTHROUGH_BODY_TIMEOUT_S": "3",
    }
    with running(tmp_path_factory.mktemp("pool-gateway"), **settings) as gw:
        yield gw


def slow_body(gateway: Gateway, key: str) -> socket.socket:
    """A POST /comfy/prompt that declares a body and sends only its first bytes."""
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=30)
    head = (
        f"POST /comfy/prompt HTTP/1.1\r\nHost: gateway\r\nX-API-Key: {key}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    sock.sendall(head.encode() + b'{"prompt": ')
    return sock


def unread_answer(gateway: Gateway, key: str) -> socket.socket:
    """A GET /comfy/view of a large file whose answer is never read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", gateway.port))
    sock.sendall(
        f"GET /comfy/view?filename=big.bin&type=input HTTP/1.1\r\nHost: gateway\r\n"
        f"X-API-Key: {key}\r\n\r\n".encode()
    )
    return sock


def status_of(sock: socket.socket) -> int:
    """The status of the answer the socket gets (0 when the connection closes without one)."""
    head = b""
    with contextlib.suppress(OSError):
        while b"\r\n" not in head:
            chunk = sock.recv(1024)
            if not chunk:
                break
            head += chunk
    return int(head.split(b" ")[1]) if head.startswith(b"HTTP/1.1 ") else 0


def received(sock: socket.socket) -> int:
    """How many bytes arrive until the gateway closes the connection."""
    total = 0
    with contextlib.suppress(OSError):
        while chunk := sock.recv(2**16):
            total += len(chunk)
    return total


def test_slow_passthrough_clients_never_stop_a_job(gateway: Gateway) -> None:
    (gateway.input_dir / "big.bin").write_bytes(b"\0" * BIG)
    sockets: list[socket.socket] = []
    try:
        unread = [unread_answer(gateway, ADMIN) for _ in range(UNREAD)]
        streamed = [slow_body(gateway, ADMIN) for _ in range(SLOW_BODIES)]
        read_first = [slow_body(gateway, ALICE) for _ in range(SLOW_BODIES)]
        sockets = [*unread, *streamed, *read_first]
        time.sleep(1)  # every one of them reached the gateway
        with client(gateway, ALICE) as alice:
            job = alice.post("/prompt", json={"prompt": graph("g1_empty_save")}, timeout=60)
            assert job.status_code == 200, job.text
            assert len(job.json()["images"]) == 1
            # The slow bodies end in 408 (or, past the passthrough's connections, 503).
            assert {status_of(s) for s in read_first} == {408}
            assert {status_of(s) for s in streamed} <= {408, 503}
            # An answer nobody reads is cut off, and its connection serves again.
            assert all(received(s) < BIG for s in unread)
            assert "PASSTHROUGH_TIMEOUT_S (3s): cut off" in gateway.log_text()
            assert alice.get("/comfy/system_stats").status_code == 200
            assert_capacity_whole(gateway, alice)
    finally:
        for sock in sockets:
            sock.close()
        (gateway.input_dir / "big.bin").unlink()
