"""RemoteFile: where an output file of a fleet's job lies when another gateway ran the job, and
how to fetch its bytes from there (that gateway's internal files endpoint, app.routes.fleet_files),
authenticated with the fleet's secret.

Its bytes come in whatever pieces HTTP gives; they are cut again into pieces of the size asked
for (the remainder carried to the next), so that a file's base64, made piece by piece
(app.core.outcome.ResultFile.base64_chunks), stays aligned: every piece but the last a multiple
of 3 bytes. A gateway that cannot give them (it stopped, it no longer keeps them, the secret
differs) is an OutputsUnavailable naming it, never a hang: every read has a deadline.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from functools import cache
from urllib.parse import urlsplit

import httpx

from app.core.errors import OutputsUnavailable

SECRET_HEADER = "X-Fleet-Secret"
# Connecting to a live gateway is quick; between two pieces of a file it reads from its disk.
TIMEOUT = httpx.Timeout(30.0, connect=5.0)


@cache
def tls() -> ssl.SSLContext:
    """httpx's TLS context, made once: a client makes its own otherwise (25 ms, every fetch)."""
    return httpx.create_ssl_context()


@dataclass(frozen=True)
class RemoteFile:
    """An output's bytes on another gateway of the fleet: its URL there and the fleet's secret."""

    url: str
    secret: str = field(repr=False)

    @property
    def gateway(self) -> str:
        """The gateway that has it, as errors name it (its address)."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def headers(self) -> dict[str, str]:
        return {SECRET_HEADER: self.secret}

    def unavailable(self, why: str) -> OutputsUnavailable:
        return OutputsUnavailable(
            f"the job's outputs lie with the gateway that ran it ({self.gateway}), and {why}: "
            "run the job again, or have its outputs uploaded (`s3`, `azure_blob_upload`, "
            "`http_upload`) to keep them beyond that gateway",
            details={"gateway": self.gateway},
        )

    def _check(self, status: int) -> None:
        if status == 404:
            raise self.unavailable("it no longer keeps them (its job history let them go)")
        if status in (401, 403):
            raise self.unavailable("it refused the fleet's secret (FLEET_SECRET differs)")
        if status != 200:
            raise self.unavailable(f"it answered HTTP {status}")

    async def check(self) -> None:
        """Raise OutputsUnavailable unless the gateway still has the file (a HEAD request)."""
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT, verify=tls()) as client:
                answer = await client.head(self.url, headers=self.headers)
        except httpx.HTTPError as e:
            raise self.unavailable(f"it cannot be reached ({type(e).__name__})") from e
        self._check(answer.status_code)

    async def chunks(self, size: int) -> AsyncIterator[bytes]:
        """Its bytes, in pieces of exactly `size` (the last one shorter)."""
        async with httpx.AsyncClient(timeout=TIMEOUT, verify=tls()) as client:
            try:
                async with client.stream("GET", self.url, headers=self.headers) as answer:
                    self._check(answer.status_code)
                    async for piece in answer.aiter_bytes(size):  # exact: httpx re-cuts them
                        yield piece
            except httpx.HTTPError as e:
                raise self.unavailable(f"reading from it failed ({type(e).__name__})") from e

    def iter_chunks(self, size: int) -> Iterator[bytes]:
        """As chunks, blocking: for a worker thread."""
        with httpx.Client(timeout=TIMEOUT, verify=tls()) as client:
            try:
                with client.stream("GET", self.url, headers=self.headers) as answer:
                    self._check(answer.status_code)
                    yield from answer.iter_bytes(size)
            except httpx.HTTPError as e:
                raise self.unavailable(f"reading from it failed ({type(e).__name__})") from e
