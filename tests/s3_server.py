"""S3Server: moto's real S3-compatible server on a free loopback port, and a boto3 client for it
with the test credentials (the tests of S3 inputs, outputs, models and key reach share it)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from tests.gateway_process import free_port

KEYS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}


class S3Server:
    """One moto server; `endpoint` is its URL, `env` the gateway settings that reach it."""

    def __init__(self, server: ThreadedMotoServer, endpoint: str) -> None:
        self.server = server
        self.endpoint = endpoint
        self.env = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": KEYS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": KEYS["aws_secret_access_key"],
            "AWS_REGION": "us-east-1",
        }

    def client(self, **keys: str) -> Any:
        """A boto3 S3 client of this server, with the test keys or the ones given."""
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1", **(keys or KEYS)
        )

    @classmethod
    def start(cls, *buckets: str) -> S3Server:
        """A running moto server with `buckets` made."""
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        s3 = cls(server, f"http://{host}:{port}")
        client = s3.client()
        for bucket in buckets:
            client.create_bucket(Bucket=bucket)
        return s3

    def stop(self) -> None:
        self.server.stop()


@contextlib.contextmanager
def s3_server(*buckets: str) -> Iterator[S3Server]:
    """S3Server.start, stopped on exit."""
    s3 = S3Server.start(*buckets)
    try:
        yield s3
    finally:
        s3.stop()
