"""`python -m app`: run the gateway (and its ComfyUI) until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import os
import socket
import sys
from types import FrameType

import uvicorn

from app.core.logs import configure_logging
from app.core.settings import SettingsError, die_on_bad_settings, load_settings, their_settings
from app.gateway import Gateway
from app.main import create_app
from app.startup import fetch_warmup_prompt


class GatewayServer(uvicorn.Server):
    """uvicorn, except that a signal that led to a clean shutdown is not raised again.

    uvicorn re-raises SIGTERM after its graceful shutdown, so the process would report death by
    signal; after draining jobs and stopping ComfyUI the gateway exits with its own status.
    """

    def __init__(self, config: uvicorn.Config, gateway: Gateway) -> None:
        super().__init__(config)
        self.gateway = gateway

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()
        # The grace period starts now, while uvicorn drains requests, not after it.
        self.gateway.lifecycle.begin_shutdown()


log = logging.getLogger("app")

DUAL_STACK = ("::", "")  # HOST values that mean "every address, IPv4 and IPv6"


def dual_stack_socket(port: int) -> socket.socket:
    """One socket on `[::]:port` that takes IPv4 connections too.

    asyncio (and so uvicorn) binds `::` with IPV6_V6ONLY set, which refuses IPv4: a
    `curl 127.0.0.1:3000` or an IPv4 kubelet probe would find nothing listening. On a host
    without IPv6 this falls back to `0.0.0.0`.
    """
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        log.warning("this host has no IPv6: listening on 0.0.0.0 (IPv4) only")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        address: tuple[str, int] = ("0.0.0.0", port)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        address = ("::", port)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as e:
        die_on_bad_settings(e)
    configure_logging(settings.log_level, settings.log_format)
    for note in their_settings(os.environ).notes:
        log.warning("comfyui-api setting: %s", note)
    try:
        settings = fetch_warmup_prompt(settings)
    except SettingsError as e:
        die_on_bad_settings(e)
    try:
        app = create_app(settings)
    except SettingsError as e:  # a workflow module that cannot be loaded
        die_on_bad_settings(e)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) or None,
    )
    gateway = app.state.gateway
    server = GatewayServer(config, gateway)
    gateway.lifecycle.request_exit = lambda: setattr(server, "should_exit", True)
    sockets = None
    if settings.host in DUAL_STACK:
        try:
            sockets = [dual_stack_socket(settings.port)]
        except OSError as e:
            log.critical("cannot listen on port %d: %s", settings.port, e.strerror or e)
            return 1
        log.info("listening on port %d, IPv4 and IPv6 (HOST=%s)", settings.port, settings.host)
    server.run(sockets=sockets)
    if gateway.lifecycle.exit_code:
        return int(gateway.lifecycle.exit_code)
    return 0 if gateway.lifecycle.started else 3


if __name__ == "__main__":
    sys.exit(main())
