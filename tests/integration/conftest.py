"""Integration fixtures: an S3-protocol server (moto) on loopback for the whole session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import pytest
from moto.server import ThreadedMotoServer

# Dummy credentials: moto accepts any pair, and real ones must never reach a test.
S3_ACCESS_KEY_ID = "caverna-test-key"
S3_SECRET_ACCESS_KEY = "caverna-test-secret"
S3_REGION = "us-east-1"


@dataclass(frozen=True, slots=True)
class S3Server:
    """A running moto server and a way to make fresh, isolated buckets on it."""

    endpoint: str

    def create_bucket(self) -> str:
        """A new empty bucket per test, so tests never see each other's objects."""
        name = f"caverna-{uuid.uuid4().hex[:20]}"
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=S3_REGION,
            aws_access_key_id=S3_ACCESS_KEY_ID,
            aws_secret_access_key=S3_SECRET_ACCESS_KEY,
        )
        client.create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with pytest.MonkeyPatch.context() as env:
        # obstore and boto3 read AWS_* variables; pin them to the dummies and keep any endpoint
        # override from the developer's shell from redirecting tests away from loopback.
        env.setenv("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY_ID)
        env.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_ACCESS_KEY)
        env.delenv("AWS_SESSION_TOKEN", raising=False)
        env.delenv("AWS_PROFILE", raising=False)
        env.delenv("AWS_ENDPOINT_URL", raising=False)
        env.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        env.delenv("AWS_ENDPOINT", raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield S3Server(endpoint=f"http://{host}:{port}")
        finally:
            server.stop()
