"""`python -m app`: run the gateway (and its ComfyUI) until SIGTERM/SIGINT."""

from __future__ import annotations

import sys
from types import FrameType

import uvicorn

from app.gateway import Gateway
from app.logs import configure_logging
from app.main import create_app
from app.settings import SettingsError, die_on_bad_settings, load_settings


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
        self.gateway.begin_shutdown()


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as e:
        die_on_bad_settings(e)
    configure_logging(settings.log_level, settings.log_format)
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
    gateway.request_exit = lambda: setattr(server, "should_exit", True)
    server.run()
    if gateway.exit_code:
        return int(gateway.exit_code)
    return 0 if gateway.started else 3


if __name__ == "__main__":
    sys.exit(main())
