"""A job's newest latent preview (Preview), and the throttle that publishes it (PreviewThrottle).

A job keeps one preview, the newest: a new frame replaces it, whether or not it was published.
The throttle wakes the job's followers at most `PREVIEW_MAX_PER_S` times a second; a frame that
arrives sooner is published when the window opens, so the last one is never lost. A follower
reads the newest preview when it is woken, so however slowly it reads it never gets a backlog,
and the gateway never holds more than one preview per job for it.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any


@dataclass(frozen=True)
class Preview:
    """One latent preview of a running job: the image as ComfyUI sent it, where and when."""

    image: bytes
    media_type: str  # image/jpeg or image/png, as ComfyUI sent it
    node: str | None  # the node id in the job's graph
    node_name: str | None  # its title, else its class_type
    step: int  # of the latest `progress` event
    max: int
    at: float  # wall-clock time it arrived

    @cached_property
    def data_url(self) -> str:
        return f"data:{self.media_type};base64,{base64.b64encode(self.image).decode('ascii')}"

    def event_data(self) -> dict[str, Any]:
        """The `preview` event of GET /prompt/{id}/events."""
        return {
            "image": self.data_url,
            "node": self.node,
            "node_name": self.node_name,
            "step": self.step,
            "max": self.max,
        }


class PreviewThrottle:
    """Calls `publish` at most max_per_s times a second: at once when the window is open, else
    once when it opens (for whatever preview is newest then)."""

    def __init__(self, max_per_s: float, publish: Callable[[], None]) -> None:
        self.interval_s = 1.0 / max_per_s
        self.publish = publish
        self._last: float | None = None  # monotonic time of the last publication
        self._timer: asyncio.TimerHandle | None = None

    def offer(self) -> None:
        """A new preview is kept: publish it now or when the window opens."""
        if self._timer is not None:
            return  # already due: it will publish the newest
        wait_s = 0.0 if self._last is None else self._last + self.interval_s - time.monotonic()
        if wait_s <= 0:
            self._fire()
        else:
            self._timer = asyncio.get_running_loop().call_later(wait_s, self._fire)

    def close(self) -> None:
        """Publish nothing more (the job ended)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        self._last = time.monotonic()
        self.publish()
