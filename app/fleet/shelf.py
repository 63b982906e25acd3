"""FileShelf: the output files of the fleet's jobs this gateway ran, by opaque token, for the
gateway that answers a job (any of the fleet's) to fetch from here (app.routes.fleet_files),
and the fleet's secret that such a fetch proves itself with.

Redis holds a job's outcome as metadata only (app.fleet.results): each file's name, size, node,
content type and its URL here, `FLEET_ADVERTISE_URL` + `/internal/fleet/files/<token>`. The
shelf refers to each file weakly: it lies here exactly as long as the job's record in this
gateway's own history keeps it (JOB_HISTORY_MAX, JOB_HISTORY_TTL_S, JOB_HISTORY_MAX_MB), or
an answer that sends it is under way; then its token is unknown (404).

The secret is FLEET_SECRET, or, without it, one that Redis holds for the fleet (the first
gateway to ask sets it; every gateway adopts what Redis holds, each time it checks on Redis, so
a Redis restarted empty gets one again): whoever reaches the fleet's Redis is trusted with
all of the fleet's jobs anyway.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from weakref import WeakValueDictionary

from app.core.outcome import ResultFile

FILES_PATH = "/internal/fleet/files/"


class FileShelf:
    """The files other gateways may fetch from this one, and the fleet's secret."""

    def __init__(self, advertise_url: str = "", secret: str | None = None) -> None:
        self.base = advertise_url.rstrip("/") + FILES_PATH
        self.configured = secret is not None  # FLEET_SECRET; else the one Redis holds
        self.secret = secret or secrets.token_urlsafe(32)  # until Redis's is read
        self._files: WeakValueDictionary[str, ResultFile] = WeakValueDictionary()

    def put(self, file: ResultFile) -> str:
        """Shelve a file: the URL other gateways fetch it from."""
        token = secrets.token_urlsafe(24)
        self._files[token] = file
        return self.base + token

    def get(self, token: str) -> ResultFile | None:
        return self._files.get(token)

    def local(self, url: str) -> ResultFile | None:
        """The file itself where a URL names one on this shelf (the job ran here), else None."""
        if not url.startswith(self.base):
            return None
        return self.get(url.removeprefix(self.base))

    def allows(self, presented: str | None) -> bool:
        """Whether a request proves the fleet's secret (compared in constant time)."""
        if not presented:
            return False
        return hmac.compare_digest(presented.encode(), self.secret.encode())

    async def share_secret(self, redis: Any, key: str) -> None:
        """Without FLEET_SECRET, adopt the secret Redis holds for the fleet, set first if none."""
        if self.configured:
            return
        async with redis.pipeline(transaction=False) as pipe:
            pipe.set(key, self.secret, nx=True)
            pipe.get(key)
            _, held = await pipe.execute()
        if held:
            self.secret = str(held)
