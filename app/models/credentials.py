"""Credentials for model hosts: which header goes with which URL, and with no other.

A credential is matched against the URL of every hop of a download, redirects included, by the
one rule for operators' prefixes (app.core.url_prefixes): the prefix's scheme, host and port
must be the URL's own and its path the URL's path up to a `/`. So a token for
`https://huggingface.co/` never reaches the CDN a download is redirected to, nor
`https://huggingface.co.example.net/`. Values are kept as SecretStr until the moment a header is
built, so no repr, log line or error message can show them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import SecretStr

from app.core.settings import Settings
from app.core.url_prefixes import UrlPrefix

# Where the tokens with a setting of their own go.
HF_PREFIX = "https://huggingface.co/"
CIVITAI_PREFIX = "https://civitai.com/"
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


def header_of(value: str) -> tuple[str, str]:
    """A credential's header: `Name: value` as given, else a bearer token."""
    name, sep, rest = value.partition(":")
    if sep and rest.startswith(" ") and HEADER_NAME.match(name.strip()):
        return name.strip(), rest.strip()
    if value.startswith(("Bearer ", "Basic ")):
        return "Authorization", value.strip()
    return "Authorization", f"Bearer {value.strip()}"


@dataclass(frozen=True)
class Credential:
    """One header for the URLs under one prefix."""

    prefix: UrlPrefix
    secret: SecretStr

    @classmethod
    def parse(cls, prefix: str, secret: SecretStr) -> Credential | None:
        found = UrlPrefix.parse(prefix)
        return cls(found, secret) if found is not None else None

    def matches(self, url: str) -> bool:
        return self.prefix.covers(url)


class Credentials:
    """The credentials one download may use: its request's own, then the operator's."""

    def __init__(self, entries: list[Credential], then: Credentials | None = None) -> None:
        self.entries = entries  # earlier ones win among prefixes of the same length
        self.then = then  # consulted when none of these matches

    @classmethod
    def from_settings(cls, settings: Settings) -> Credentials:
        given = dict(settings.model_credentials)
        if settings.hf_token is not None:
            given.setdefault(HF_PREFIX, settings.hf_token)
        if settings.civitai_token is not None:
            given.setdefault(CIVITAI_PREFIX, settings.civitai_token)
        return cls.of(given)

    @classmethod
    def of(cls, given: Mapping[str, SecretStr]) -> Credentials:
        entries = [Credential.parse(prefix, secret) for prefix, secret in given.items()]
        return cls([entry for entry in entries if entry is not None])

    @classmethod
    def for_host_of(cls, url: str, secret: SecretStr) -> Credentials:
        """A request's `auth`: for the host of its own URL, any path."""
        found = UrlPrefix.host_of(url)
        return cls([Credential(found, secret)] if found is not None else [])

    def before(self, other: Credentials) -> Credentials:
        """These first (a request's own), then other (the operator's)."""
        return Credentials(self.entries, other) if self.entries else other

    def match(self, url: str) -> Credential | None:
        """The credential for url: the longest matching prefix."""
        best: Credential | None = None
        for entry in self.entries:
            longer = best is None or len(entry.prefix.path) > len(best.prefix.path)
            if longer and entry.matches(url):
                best = entry
        if best is None and self.then is not None:
            return self.then.match(url)
        return best

    def headers(self, url: str) -> dict[str, str]:
        """The header to send to url, if any credential is for it."""
        entry = self.match(url)
        if entry is None:
            return {}
        name, value = header_of(entry.secret.get_secret_value())
        return {name: value}

    def fingerprint(self, url: str) -> str:
        """Tells apart downloads of one URL made with different credentials; reveals nothing."""
        entry = self.match(url)
        if entry is None:
            return ""
        return hashlib.sha256(entry.secret.get_secret_value().encode()).hexdigest()[:16]
