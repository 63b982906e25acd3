"""URL prefixes the operator gives a secret for (MODEL_CREDENTIALS, HF_TOKEN, CIVITAI_TOKEN,
HTTP_UPLOAD_AUTH_PREFIXES), and the one rule for whether a URL is under one.

A URL is under a prefix when its scheme, host and port are the prefix's (hosts compared without
case, default ports filled in) and its path is the prefix's path or continues it at a `/`:
`https://h/private` covers `/private` and `/private/x`, never `/private-x`. A path that could
reach another place than it reads (a `.` or `..` segment, plain or percent-encoded, an encoded
`/` or a `\\`) is under no prefix: the secret stays home rather than guess what the server makes
of it. Every hop of a redirect is a URL of its own and is matched again.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
Origin = tuple[str, str, int]  # scheme, host, port


def origin(url: str) -> Origin | None:
    """(scheme, host, port) of an http(s) URL, or None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or DEFAULT_PORTS[scheme]


def plain_path(url: str) -> str | None:
    """The URL's path as a server reads it, or None when it could read it as another."""
    raw = urlsplit(url).path or "/"
    if "\\" in raw or "%2f" in raw.lower() or "%5c" in raw.lower():
        return None
    decoded = unquote(raw)
    if any(segment in (".", "..") for segment in decoded.split("/")):
        return None
    return decoded


def prefix_problem(prefix: str) -> str | None:
    """Why a URL prefix is not one (it needs an http(s) scheme and a host), or None."""
    if origin(prefix) is not None and plain_path(prefix) is not None:
        return None
    return (
        f"{prefix[:100]!r} is not a URL prefix: give its scheme and host, e.g. https://host/path/"
    )


@dataclass(frozen=True)
class UrlPrefix:
    """The URLs under one prefix."""

    origin: Origin
    path: str

    @classmethod
    def parse(cls, prefix: str) -> UrlPrefix | None:
        found, path = origin(prefix), plain_path(prefix)
        return cls(found, path) if found is not None and path is not None else None

    @classmethod
    def host_of(cls, url: str) -> UrlPrefix | None:
        """Every path of a URL's own scheme, host and port."""
        found = origin(url)
        return cls(found, "/") if found is not None else None

    def covers(self, url: str) -> bool:
        if origin(url) != self.origin:
            return False
        path = plain_path(url)
        if path is None:
            return False
        base = self.path if self.path.endswith("/") else self.path + "/"
        return path == self.path or path.startswith(base)


def parse_prefixes(prefixes: tuple[str, ...] | list[str]) -> list[UrlPrefix]:
    """The prefixes that parse (settings have refused the others)."""
    return [found for p in prefixes if (found := UrlPrefix.parse(p)) is not None]
