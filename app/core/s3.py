"""The operator's S3 as requests use it: the buckets its credentials serve (S3_BUCKETS), and
what a client may see of an S3 failure.

Both S3 users share these rules: output uploads (app.jobs.uploads) and model files on S3
(app.models.s3); requests are checked where they come in (app.models.grants).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.core.errors import InvalidRequest
from app.core.settings import Settings


@dataclass(frozen=True)
class Buckets:
    """The buckets the operator's AWS credentials serve (S3_BUCKETS); none listed: any."""

    names: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_settings(cls, settings: Settings) -> Buckets:
        return cls(frozenset(settings.s3_buckets))

    def refusal(self, bucket: str) -> str | None:
        """Why a request may not name this bucket, or None."""
        if not self.names or bucket in self.names:
            return None
        return (
            f"the bucket {bucket!r} is not one this gateway's S3 credentials serve (S3_BUCKETS: "
            f"{', '.join(sorted(self.names))})"
        )

    def check(self, bucket: str, where: str) -> None:
        if refusal := self.refusal(bucket):
            raise InvalidRequest(f"{where}: {refusal}", location=where)

    def check_url(self, url: str, where: str) -> None:
        """An `s3://bucket/key` model URL: its bucket (http(s) URLs have no bucket)."""
        if url[:5].lower() == "s3://":
            self.check(url[5:].split("/", 1)[0], where)


def s3_error_code(error: Exception) -> str:
    """What a client may see of an S3 failure: its code (NoSuchBucket, AccessDenied), or the
    exception's class; never the message, which may name the operator's account, user or
    endpoint."""
    response: Any = getattr(error, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if isinstance(code, str) and code:
            return code
    return type(error).__name__
