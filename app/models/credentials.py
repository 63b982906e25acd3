"""Credentials for model hosts: which header goes with which URL, and with no other.

A credential is matched against the URL of every hop of a download, redirects included, by the
one rule for operators' prefixes (app.core.url_prefixes): the prefix's scheme, host and port
must be the URL's own and its path the URL's path up to a `/`. So a token for
`https://huggingface.co/` never reaches the CDN a download is redirected to, nor
`https://huggingface.co.example.net/`. Values are kept as SecretStr until the moment a header is
built, so no repr, log line or error message can show them.

A client's own credentials (comfyui-api's `credentials` globs on a job, `auth` on
`POST /download`) come first: the first glob that matches the URL wins, and then only that auth
is used (theirs: no fallback to the operator's). A client's auth goes to the hops of a download
on its URL's own scheme, host and port: a redirect to another host gets none of it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import SecretStr

from app.core.download_auth import CredentialRule, DownloadAuth, S3Auth, first_match
from app.core.settings import Settings
from app.core.url_prefixes import UrlPrefix, origin

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

    def __init__(
        self,
        entries: list[Credential],
        then: Credentials | None = None,
        rules: list[CredentialRule] | None = None,
        own: DownloadAuth | None = None,
    ) -> None:
        self.entries = entries  # earlier ones win among prefixes of the same length
        self.then = then  # consulted when none of these matches
        self.rules = rules or []  # a client's globs (a job's `credentials`): first match wins
        self.own = own  # a client's `auth` for the URL of its download (POST /download)
        self.client = False  # entries are a request's own (`model_credentials`, our `auth`)

    @classmethod
    def of_client(
        cls, rules: list[CredentialRule] | None, own: DownloadAuth | None, then: Credentials
    ) -> Credentials:
        """A client's globs or auth first, then the operator's."""
        if not rules and own is None:
            return then
        return cls([], then, rules, own)

    def client_auth(self, url: str, start: str | None = None) -> DownloadAuth | None:
        """The client's auth for one hop `url` of a download of `start` (default: url itself):
        only on the start's own scheme, host and port."""
        start = start or url
        if start != url and origin(url) != origin(start):
            return None
        if self.own is not None:
            return self.own
        return first_match(self.rules, url)

    def has_client_auth(self, url: str) -> bool:
        """Whether a request's own credential (any kind) is for url: a file it fetches is then
        guarded (app.models.proof)."""
        if self.client_auth(url) is not None:
            return True
        if self.client and any(entry.matches(url) for entry in self.entries):
            return True
        return self.then is not None and self.then.has_client_auth(url)

    def url_for(self, url: str, start: str | None = None) -> str:
        """The hop's URL with a client's `query` auth set (replaced if present)."""
        auth = self.client_auth(url, start)
        if auth is None or auth.type != "query":
            return url
        parts = urlsplit(url)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                 if k != auth.query_param]  # fmt: skip
        query.append((auth.query_param, auth.query_value.get_secret_value()))
        return urlunsplit(parts._replace(query=urlencode(query)))

    def s3_auth(self, url: str) -> S3Auth | None:
        """A client's own S3 credentials for an `s3://` URL (else the operator's AWS ones)."""
        auth = self.client_auth(url)
        return auth if isinstance(auth, S3Auth) else None

    @classmethod
    def from_settings(cls, settings: Settings) -> Credentials:
        given = dict(settings.model_credentials)
        if settings.hf_token is not None:
            given.setdefault(HF_PREFIX, settings.hf_token)
        if settings.civitai_token is not None:
            given.setdefault(CIVITAI_PREFIX, settings.civitai_token)
        name, value = settings.http_auth_header_name, settings.http_auth_header_value
        if name is not None and value is not None:  # comfyui-api's, for the listed prefixes only
            header = SecretStr(f"{name}: {value.get_secret_value()}")
            for prefix in settings.http_auth_header_prefixes:
                given.setdefault(prefix, header)
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
        if not self.entries and not self.rules and self.own is None:
            return other
        mine = Credentials(self.entries, other, self.rules, self.own)
        mine.client = True
        return mine

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

    def headers(self, url: str, start: str | None = None) -> dict[str, str]:
        """The header to send to one hop `url` of a download of `start`, if any credential is
        for it: a client's auth matching it is the only one used."""
        auth = self.client_auth(url, start)
        if auth is not None:
            return auth.headers()
        entry = self.match(url)
        if entry is None:
            return {}
        name, value = header_of(entry.secret.get_secret_value())
        return {name: value}

    def fingerprint(self, url: str) -> str:
        """Tells apart downloads of one URL made with different credentials; reveals nothing."""
        auth = self.client_auth(url)
        if auth is not None:
            return "client:" + auth.fingerprint()
        entry = self.match(url)
        if entry is None:
            return ""
        return hashlib.sha256(entry.secret.get_secret_value().encode()).hexdigest()[:16]
