"""An output into S3 at constant memory: a small file in one PUT, a large one as a multipart
upload, part by part, so that one part at most is in memory (PART_BYTES, 8 MiB).

The whole upload runs in one worker thread (boto3 blocks), reading the file there piece by piece.
A multipart upload that fails, or whose job is cancelled, is aborted there once no part is on its
way any more: S3 keeps (and bills) the parts of an upload that is neither completed nor aborted.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from app.core.outcome import ResultFile

log = logging.getLogger(__name__)

PART_BYTES = 8 << 20  # S3's least is 5 MiB (the last part excepted); 8 MiB is the AWS CLI's own
MAX_PARTS = 10_000  # S3's most


class UploadStopped(Exception):
    """The job went away (cancelled) while its file was on its way: the upload is aborted."""


def part_bytes(size: int) -> int:
    """The part size for a file of `size` bytes: PART_BYTES, or what fits it in MAX_PARTS."""
    return max(PART_BYTES, -(-size // MAX_PARTS))


async def put_s3_object(
    client: Any, bucket: str, key: str, file: ResultFile, content_type: str
) -> None:
    """Store `file` at bucket/key; raise what boto3 raised (or what reading the file did)."""
    stop = threading.Event()
    try:
        await asyncio.to_thread(_put, client, bucket, key, file, content_type, stop)
    except asyncio.CancelledError:
        stop.set()  # the thread aborts the multipart upload at its next part
        raise


def _put(
    client: Any, bucket: str, key: str, file: ResultFile, content_type: str, stop: threading.Event
) -> None:
    if file.size <= PART_BYTES:  # at most one part's worth in memory, as below
        client.put_object(Bucket=bucket, Key=key, Body=file.read(), ContentType=content_type)
        return
    started = client.create_multipart_upload(Bucket=bucket, Key=key, ContentType=content_type)
    upload = {"Bucket": bucket, "Key": key, "UploadId": started["UploadId"]}
    try:
        parts = []
        for number, piece in enumerate(file.iter_chunks(part_bytes(file.size)), start=1):
            if stop.is_set():
                raise UploadStopped(f"{key}: stopped after {number - 1} parts")
            sent = client.upload_part(**upload, PartNumber=number, Body=piece)
            parts.append({"PartNumber": number, "ETag": sent["ETag"]})
            del piece, sent  # the next part is read before this one would be let go
        client.complete_multipart_upload(**upload, MultipartUpload={"Parts": parts})
    except BaseException:
        _abort(client, upload)
        raise


def _abort(client: Any, upload: dict[str, str]) -> None:
    try:
        client.abort_multipart_upload(**upload)
    except Exception as e:  # the operator may need a lifecycle rule for what is left
        log.warning(
            "s3://%s/%s: aborting multipart upload %s failed: %s",
            upload["Bucket"], upload["Key"], upload["UploadId"], e,
        )  # fmt: skip
