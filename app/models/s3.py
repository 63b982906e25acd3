"""Model files from S3 (or an S3-compatible store): `s3://bucket/key`, resumed with `Range`.

Credentials, region and endpoint come from the usual AWS variables, as for output uploads
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL): the endpoint is the
operator's, so the address policy does not apply; a request names only a bucket (one of
S3_BUCKETS, when set: app.core.s3) and a key. A failure shows its S3 error code only; the
rest (which may name the operator's account, user or endpoint) goes to the log.

A request that brings its own `s3` auth (comfyui-api's `credentials`, `/download`'s `auth`) gets
a client of its own with those keys (path style, as theirs), never the operator's; its
`endpoint`, when it names one, was checked by the address policy where the request came in.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from app.core.download_auth import S3Auth
from app.core.s3 import s3_error_code
from app.models.transfer import Broken, Transfer, Writer, failed

log = logging.getLogger(__name__)

READ_BYTES = 2**20
CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
# What S3 answers when the object changed since the transfer began, or is shorter than asked.
STARTS_OVER = frozenset({"PreconditionFailed", "InvalidRange"})


def bucket_and_key(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.netloc, unquote(parts.path.lstrip("/"))


class S3Source:
    """Reads objects with boto3 in worker threads (boto3 blocks)."""

    def __init__(self) -> None:
        self._client: Any = None

    def _s3(self) -> Any:
        if self._client is None:
            import boto3  # type: ignore[import-untyped]  # ~0.3 s: only when a model is on S3

            self._client = boto3.client("s3")
        return self._client

    def client_for(self, auth: S3Auth | None) -> Any:
        """The operator's client, or one with a request's own keys."""
        if auth is None:
            return self._s3()
        import boto3
        from botocore.config import Config  # type: ignore[import-untyped]

        token = auth.session_token.get_secret_value() if auth.session_token else None
        return boto3.client(
            "s3",
            aws_access_key_id=auth.access_key_id,
            aws_secret_access_key=auth.secret_access_key.get_secret_value(),
            aws_session_token=token,
            region_name=auth.region or os.environ.get("AWS_REGION") or "us-east-1",
            endpoint_url=auth.endpoint or None,
            config=Config(s3={"addressing_style": "path"}, connect_timeout=10),
        )

    async def head(self, url: str, auth: S3Auth | None) -> str | None:
        """Whether these credentials may read the object: None if so, else why not."""
        from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

        bucket, key = bucket_and_key(url)
        try:
            client = self.client_for(auth)
            await asyncio.to_thread(client.head_object, Bucket=bucket, Key=key)
        except ClientError as e:
            code = s3_error_code(e)
            return "S3 object not found" if code in ("404", "NoSuchKey") else "S3 access denied"
        except BotoCoreError as e:
            return f"S3 could not be reached ({type(e).__name__})"
        return None

    async def receive(self, transfer: Transfer, file: IO[bytes]) -> None:
        """Append the rest of the object to file; Broken when resuming may help."""
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = bucket_and_key(transfer.url)
        if not bucket or not key:
            raise failed(transfer, "an s3:// URL names a bucket and a key: s3://bucket/key")
        ask: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if transfer.have:
            ask["Range"] = f"bytes={transfer.have}-"
            if transfer.validator:
                ask["IfMatch"] = transfer.validator
        try:
            client = self.client_for(transfer.credentials.s3_auth(transfer.url))
            answer = await asyncio.to_thread(client.get_object, **ask)
        except ClientError as e:
            code = s3_error_code(e)
            if code in STARTS_OVER:
                await transfer.restart(file)
                raise Broken(f"S3 {code}: starting over") from None
            log.warning("%s: S3 refused %s: %s", transfer.where, transfer.shown(), e)
            raise failed(transfer, f"S3 answered {code}") from None
        except BotoCoreError as e:
            raise broken(transfer, e) from None
        if transfer.have:
            match = CONTENT_RANGE.match(str(answer.get("ContentRange", "")))
            if match is None or int(match.group(1)) != transfer.have:
                await transfer.restart(file)
                raise Broken("S3 resumed at another offset than asked")
            transfer.sized(int(match.group(3)))
        else:
            transfer.validator = answer.get("ETag")
            transfer.sized(int(answer["ContentLength"]))
        body = answer["Body"]
        writer = Writer(file, transfer.grow)
        try:
            while chunk := await asyncio.to_thread(body.read, READ_BYTES):
                transfer.took(chunk)
                await writer.add(chunk)
        except BotoCoreError as e:
            raise broken(transfer, e) from None
        finally:
            await writer.flush()
            body.close()


def broken(transfer: Transfer, error: Exception) -> Broken:
    """A failure to reach S3, for the client by its class only (its text names the endpoint)."""
    log.warning("%s: reading %s from S3 failed: %s", transfer.where, transfer.shown(), error)
    return Broken(type(error).__name__)
