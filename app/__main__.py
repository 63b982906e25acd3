"""`python -m app`: run the gateway (and its ComfyUI) until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import sys
from types import FrameType

import uvicorn

from app.main import create_app
from app.settings import SettingsError, die_on_bad_settings, load_settings


class GatewayServer(uvicorn.Server):
    """uvicorn, except that a signal that led to a clean shutdown is not raised again.

    uvicorn re-raises SIGTERM after its graceful shutdown, so the process would report death by
    signal; after draining jobs and stopping ComfyUI the gateway exits with its own status.
    """

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as e:
        die_on_bad_settings(e)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per ComfyUI call is noise
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) or None,
    )
    server = GatewayServer(config)
    gateway = app.state.gateway
    gateway.request_exit = lambda: setattr(server, "should_exit", True)
    server.run()
    if gateway.exit_code:
        return int(gateway.exit_code)
    return 0 if gateway.started else 3


if __name__ == "__main__":
    sys.exit(main())
