"""Whether a request may have a model that was first downloaded with a client's own credentials.

Such a file (its cache entry says `auth_required`) is handed to a later request, of any key,
only once that request has shown its own credentials open the same source, as comfyui-api
checks: a `HEAD` (a `GET` of `Range: bytes=0-0` where `HEAD` is 405) on HTTP, `HeadObject` on
S3. A request without credentials for it, or whose credentials the source refuses, is 403.
"""

from __future__ import annotations

from urllib.parse import urljoin

import httpx

from app.core.downloads import redact
from app.core.errors import Forbidden
from app.models.credentials import Credentials
from app.models.fetch import MAX_REDIRECTS, Fetcher


async def prove_access(fetcher: Fetcher, url: str, credentials: Credentials, where: str) -> None:
    """Raise Forbidden unless these credentials open url now."""
    shown = redact(url)
    if not credentials.has_client_auth(url):
        raise Forbidden(
            f"{where}: authentication required to access cached file for URL {shown}: it was "
            "downloaded with credentials; give yours (`credentials` or `auth`)",
            location=where,
        )
    if url.lower().startswith("s3://"):
        problem = await fetcher.s3.head(url, credentials.s3_auth(url))
    else:
        problem = await _http_problem(fetcher, url, credentials, where)
    if problem is not None:
        raise Forbidden(
            f"{where}: your credentials do not open {shown} ({problem}), so its copy downloaded "
            "with other credentials is not yours to use",
            location=where,
        )


async def _http_problem(
    fetcher: Fetcher, url: str, credentials: Credentials, where: str
) -> str | None:
    start = url
    for method in ("HEAD", "GET"):
        url = start
        for _ in range(MAX_REDIRECTS + 1):
            headers = credentials.headers(url, start)
            if method == "GET":
                headers["Range"] = "bytes=0-0"
            target = credentials.url_for(url, start)
            pinned = await fetcher.pin(target, where)
            headers.update(pinned.headers)
            try:
                response = await fetcher.http.request(
                    method, pinned.url, headers=headers, extensions=pinned.extensions
                )
            except httpx.HTTPError as e:
                return f"the source could not be reached: {type(e).__name__}"
            if response.is_redirect and "location" in response.headers:
                url = urljoin(url, response.headers["location"])
                continue
            break
        else:
            return "too many redirects"
        if response.status_code == 405 and method == "HEAD":
            continue
        if response.status_code in (200, 206):
            return None
        return f"HTTP {response.status_code}"
    return "HTTP 405"
