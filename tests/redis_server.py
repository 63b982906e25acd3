"""RedisServer: a real `redis-server` (Debian's, `make redis` installs it) on a free loopback
port, with its own folder; it can be stopped and started again on the same port, with or without
its append-only file, as an outage or a restart of a fleet's Redis is; or paused (SIGSTOP) with
its socket open, as a partition or a paused VM is: connections open, nothing answers."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from tests.gateway_process import LOOPBACK, free_port


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("redis-server is not installed: `make redis` installs Debian's")
    return found


class RedisServer:
    """One redis-server process; `url` stays the same across stop() and start()."""

    def __init__(self, workdir: Path, *, appendonly: bool = False) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.appendonly = appendonly
        self.url = f"redis://{LOOPBACK}:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        args = [
            redis_binary(),
            "--port", str(self.port),
            "--bind", LOOPBACK,
            "--dir", str(self.workdir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--protected-mode", "yes",
        ]  # fmt: skip
        with (self.workdir / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError), self.client() as client:
                if client.ping():
                    return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log_tail()}")
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer in 20s: {self.log_tail()}")

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=5)

    def stop(self, *, kill: bool = False) -> None:
        """Stop it (SIGKILL with kill, else a clean shutdown); the port stays reserved by name."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.resume()  # a paused server would not hear SIGTERM
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        self.proc.wait(20)

    def pause(self) -> None:
        """Stop answering, every socket left open (SIGSTOP)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        # The signal is delivered asynchronously: return once the process is stopped, so a
        # test's outage has begun when pause() returns (a busy machine can take a moment).
        deadline = time.monotonic() + 10
        while stat_state(self.proc.pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.01)

    def resume(self) -> None:
        """Answer again (SIGCONT); harmless on a server that is not paused."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def log_tail(self) -> str:
        path = self.workdir / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"


def stat_state(pid: int) -> str:
    """A process's state letter in /proc (`R` running, `S` sleeping, `T` stopped, ...)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(") ", 1)[1][0]
    except OSError:
        return "?"
