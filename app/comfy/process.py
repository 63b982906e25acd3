"""ComfyProcess: start ComfyUI as a child, wait until it answers, watch it, restart it, stop it.

The child gets its own process group (so stopping it stops everything it spawned) and, on Linux,
a parent-death signal (so a gateway killed with SIGKILL does not leave ComfyUI behind).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable

import httpx

from app.comfy.command import CommandLine
from app.core.settings import Settings

log = logging.getLogger(__name__)


STARTUP_REPORT_S = 15.0  # how often the log says what start-up is waiting for


class ComfyStartError(Exception):
    """ComfyUI could not be started; the message says why and quotes its last log lines."""


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: the kernel sends SIGKILL to ComfyUI if the gateway dies for any reason.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def child_env(environ: dict[str, str], gpu: str | None, instances: int) -> dict[str, str]:
    """The environment of one ComfyUI child: the gateway's, its GPU, and its share of the cores.

    torch starts one thread per core in every process; several instances whose threads
    outnumber the cores spin against each other (measured on 2 cores: two instances ran half
    the jobs per second of one). So each instance of a pool gets cores ÷ instances threads,
    unless the operator set OMP_NUM_THREADS.
    """
    env = {**environ, "PYTHONUNBUFFERED": "1"}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    if instances > 1 and "OMP_NUM_THREADS" not in environ:
        env["OMP_NUM_THREADS"] = str(max(1, usable_cores() // instances))
    return env


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class ComfyProcess:
    """One ComfyUI child process: instance `index` of the pool, on its own port (and GPU)."""

    def __init__(self, settings: Settings, index: int = 0) -> None:
        self.settings = settings
        self.index = index
        self.port = settings.instance_port(index)
        self.url = settings.instance_url(index)
        self.gpu = settings.instance_gpu(index)
        self.pooled = settings.instance_count > 1
        # How logs name it: plain "ComfyUI" when it is the only one.
        self.name = f"ComfyUI {index}" if self.pooled else "ComfyUI"
        self.output_log = logging.getLogger(f"comfyui.{index}" if self.pooled else "comfyui")
        self.proc: asyncio.subprocess.Process | None = None
        self.last_lines: collections.deque[str] = collections.deque(maxlen=40)
        self.restarts = 0
        self.stopping = False
        self.recycling = False  # a restart on purpose is under way: not a crash
        self.last_output_at = time.monotonic()
        self._pump: asyncio.Task[None] | None = None
        self.command_line = CommandLine(settings, index)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        """Spawn ComfyUI and wait until /system_stats answers, or raise ComfyStartError."""
        s = self.settings
        if port_in_use(s.direct_address, self.port):
            raise ComfyStartError(
                f"port {self.port} on {s.direct_address} is already taken by another process; "
                "stop it or set COMFYUI_PORT_HOST to a free port (the gateway will not use a "
                "ComfyUI it did not start)"
            )
        argv = self.command_line.argv()
        if not s.comfy_home.is_dir():
            raise ComfyStartError(
                f"COMFY_HOME {s.comfy_home} is not a folder; run `make comfyui` to install the "
                "bundled ComfyUI, or point COMFY_HOME at yours"
            )
        log.info("starting %s: %s (in %s)", self.name, " ".join(argv), s.comfy_home)
        env = child_env(dict(os.environ), self.gpu, s.instance_count)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=s.comfy_home,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        except OSError as e:
            raise ComfyStartError(f"cannot run {argv[0]}: {e}") from e
        self._pump = asyncio.create_task(self._forward_output(self.proc))
        await self._wait_until_answering()

    async def _forward_output(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            self.last_output_at = time.monotonic()
            line = raw.decode(errors="replace").rstrip()
            if line:
                self.last_lines.append(line)
                self.output_log.info("%s", line)

    async def _wait_until_answering(self) -> None:
        """Poll /system_stats while ComfyUI runs and keeps printing, up to STARTUP_TIMEOUT_S.

        A cold start on a small busy machine, or a GPU box importing custom nodes, can take
        minutes; a ComfyUI that hangs prints nothing. So the wait ends when it answers, exits,
        falls silent for STARTUP_SILENCE_MAX_S, or runs past STARTUP_TIMEOUT_S (or, when set,
        STARTUP_CHECK_MAX_TRIES checks).
        """
        s = self.settings
        started = self.last_output_at = time.monotonic()
        next_report = started + STARTUP_REPORT_S
        checks = 0
        async with httpx.AsyncClient(base_url=self.url, timeout=2.0) as http:
            while True:
                if not self.running:
                    await self._drain_output()
                    raise ComfyStartError(
                        f"{self.name} exited with code {self.proc and self.proc.returncode} while "
                        f"starting. Its last lines:\n{self.tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    checks += 1
                    if (await http.get("/system_stats")).status_code == 200:
                        log.info("%s answers after %.1fs", self.name, time.monotonic() - started)
                        return
                now = time.monotonic()
                if reason := self._give_up_reason(now - started, now - self.last_output_at, checks):
                    await self._kill()
                    raise ComfyStartError(
                        f"{self.name} did not answer {self.url}/system_stats: {reason}. "
                        f"Its last lines:\n{self.tail()}"
                    )
                if now >= next_report:
                    next_report = now + STARTUP_REPORT_S
                    last = self.last_lines[-1] if self.last_lines else "(nothing yet)"
                    log.info(
                        "still waiting for %s to answer %s/system_stats (%.0fs; it runs, last "
                        "printed %.0fs ago: %.120s)",
                        self.name, self.url, now - started, now - self.last_output_at, last,
                    )  # fmt: skip
                await asyncio.sleep(s.startup_check_interval_s)

    def _give_up_reason(self, waited_s: float, silent_s: float, checks: int) -> str | None:
        s = self.settings
        if waited_s > s.startup_timeout_s:
            return f"still not after {waited_s:.0f}s (STARTUP_TIMEOUT_S={s.startup_timeout_s:g})"
        if silent_s > s.startup_silence_max_s:
            return (
                f"it has printed nothing for {silent_s:.0f}s and may hang "
                f"(STARTUP_SILENCE_MAX_S={s.startup_silence_max_s:g})"
            )
        if s.startup_check_max_tries is not None and checks >= s.startup_check_max_tries:
            return (
                f"not after {checks} checks {s.startup_check_interval_s:g}s apart "
                "(raise STARTUP_CHECK_MAX_TRIES, or unset it, if it is just slow)"
            )
        return None

    async def _drain_output(self) -> None:
        if self._pump:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._pump), 2.0)

    def tail(self) -> str:
        return "\n".join(self.last_lines) or "(no output)"

    async def wait(self) -> int:
        assert self.proc is not None
        return await self.proc.wait()

    async def supervise(
        self,
        on_exit: Callable[[int], Awaitable[None]],
        on_restarted: Callable[[], Awaitable[None]],
    ) -> None:
        """Watch the child: start it again after a recycle; on an unexpected exit, report it and
        restart it with back-off when configured to."""
        backoff_s = 1.0
        while True:
            code = await self.wait()
            if self.stopping:
                return
            if self.recycling and await self._start_again():
                await on_restarted()
                continue
            self.recycling = False
            await self._drain_output()
            log.error(
                "%s exited unexpectedly with code %s. Its last lines:\n%s",
                self.name, code, self.tail(),
            )  # fmt: skip
            await on_exit(code)
            if not self.settings.always_restart_comfyui:
                return
            while not self.stopping:
                log.warning("restarting %s in %.0fs", self.name, backoff_s)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, self.settings.restart_max_backoff_s)
                if await self._start_again():
                    backoff_s = 1.0
                    await on_restarted()
                    break

    async def _start_again(self) -> bool:
        try:
            await self.start()
        except ComfyStartError as e:
            log.error("%s restart failed: %s", self.name, e)
            return False
        finally:
            self.recycling = False
        self.restarts += 1
        return True

    async def recycle(self) -> None:
        """Restart on purpose (leaky custom nodes, fragmented memory): the supervising loop
        starts it again at once, with no back-off and without reporting a crash."""
        self.recycling = True
        log.info("recycling %s", self.name)
        await self._kill()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop for good: no restart follows."""
        self.stopping = True
        await self._kill(timeout_s)
        self.command_line.clean_up()

    async def _kill(self, timeout_s: float = 10.0) -> None:
        """Stop ComfyUI's whole process group: SIGTERM, then SIGKILL after timeout_s."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                await asyncio.wait_for(proc.wait(), wait_s)
                break
            except TimeoutError:
                log.warning("%s did not stop on %s", self.name, sig.name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything the child left in its group
        await self._drain_output()
        log.info("%s stopped", self.name)
