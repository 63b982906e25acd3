"""A client's own credentials for the files it names, as comfyui-api takes them: `auth` on
`POST /download` and `credentials` (`[{url_pattern, auth}]`) on jobs.

An `auth` is one of five types (`bearer`, `basic`, `header`, `query`, `s3`); `url_pattern` is
their glob, matched against the whole URL string as written: `**` anything, `*` anything but
`/`, `?` any one character; the first entry that matches wins. Secrets are SecretStr, so no
repr, log line or echoed request shows them.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

# What their matcher escapes before it turns the wildcards into a regular expression.
REGEX_SPECIALS = re.compile(r"[.+^${}()|\[\]\\]")
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,256}$")


class _Auth(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    def secret_text(self) -> str:
        """Every secret of this auth, for a fingerprint that tells two apart (never shown)."""
        parts = [str(v.get_secret_value() if isinstance(v, SecretStr) else v)
                 for v in self.model_dump().values()]  # fmt: skip
        return "\x00".join(parts)

    def fingerprint(self) -> str:
        return hashlib.sha256(self.secret_text().encode()).hexdigest()[:16]

    def headers(self) -> dict[str, str]:
        """The HTTP headers this auth adds (none for `query` and `s3`)."""
        return {}


class BearerAuth(_Auth):
    type: Literal["bearer"] = Field(description="`Authorization: Bearer <token>`")
    token: SecretStr = Field(description="Sent as `Authorization: Bearer <token>`")

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token.get_secret_value()}"}


class BasicAuth(_Auth):
    type: Literal["basic"] = Field(description="`Authorization: Basic <user:password>`")
    username: str = Field(description="Basic auth user name")
    password: SecretStr = Field(description="Basic auth password")

    def headers(self) -> dict[str, str]:
        pair = f"{self.username}:{self.password.get_secret_value()}".encode()
        return {"Authorization": f"Basic {base64.b64encode(pair).decode()}"}


class HeaderAuth(_Auth):
    type: Literal["header"] = Field(description="A header of your choosing")
    header_name: str = Field(description="The header's name")
    header_value: SecretStr = Field(description="The header's value")

    @field_validator("header_name")
    @classmethod
    def _token(cls, value: str) -> str:
        if not HEADER_NAME.match(value):
            raise ValueError("must be an HTTP header name (letters, digits, `-`, …)")
        return value

    @field_validator("header_value")
    @classmethod
    def _one_line(cls, value: SecretStr) -> SecretStr:
        if any(c in value.get_secret_value() for c in "\r\n\x00"):
            raise ValueError("must be one line (no CR, LF or NUL)")
        return value

    def headers(self) -> dict[str, str]:
        return {self.header_name: self.header_value.get_secret_value()}


class QueryAuth(_Auth):
    type: Literal["query"] = Field(description="A query parameter of the URL")
    query_param: str = Field(min_length=1, description="The query parameter (e.g. `sig`)")
    query_value: SecretStr = Field(description="Its value (set, or replaced if present)")


class S3Auth(_Auth):
    type: Literal["s3"] = Field(description="An S3 client with these keys for `s3://` URLs")
    access_key_id: str = Field(description="AWS access key id")
    secret_access_key: SecretStr = Field(description="AWS secret access key")
    session_token: SecretStr | None = Field(None, description="STS session token")
    endpoint: str | None = Field(
        None, description="An S3-compatible endpoint (default: AWS, or AWS_ENDPOINT_URL)"
    )
    region: str | None = Field(None, description="Region (default AWS_REGION)")


DownloadAuth = Annotated[
    BearerAuth | BasicAuth | HeaderAuth | QueryAuth | S3Auth, Field(discriminator="type")
]


class CredentialRule(BaseModel):
    """One entry of a request's `credentials`: an auth for the URLs its pattern matches."""

    model_config = ConfigDict(extra="forbid")

    url_pattern: str = Field(
        min_length=1,
        max_length=2048,
        description="A glob against the whole URL: `**` anything, `*` anything but `/`, `?` one "
        "character (e.g. `https://*.s3.amazonaws.com/**`)",
    )
    auth: DownloadAuth = Field(description="The credentials for the URLs the pattern matches")

    def matches(self, url: str) -> bool:
        return glob_regex(self.url_pattern).fullmatch(url) is not None


@lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """comfyui-api's glob as a regular expression, the same translation theirs makes."""
    escaped = REGEX_SPECIALS.sub(lambda m: "\\" + m.group(0), pattern)
    escaped = escaped.replace("**", "\x00").replace("*", "[^/]*").replace("\x00", ".*")
    return re.compile(escaped.replace("?", "."))


def first_match(rules: list[CredentialRule] | None, url: str) -> DownloadAuth | None:
    """The auth of the first rule whose pattern matches url (theirs: array order)."""
    for rule in rules or ():
        if rule.matches(url):
            return rule.auth
    return None


def revealed(rules: list[CredentialRule]) -> list[dict[str, object]]:
    """Rules with their secrets in clear, for the gateway that will use them (a fleet's queue);
    a JSON dump would mask them."""
    shown: list[dict[str, object]] = []
    for rule in rules:
        auth = {k: v.get_secret_value() if isinstance(v, SecretStr) else v
                for k, v in dict(rule.auth).items() if v is not None}  # fmt: skip
        shown.append({"url_pattern": rule.url_pattern, "auth": auth})
    return shown
