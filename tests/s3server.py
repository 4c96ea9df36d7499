"""A real S3 HTTP API on 127.0.0.1 for the tests of object storage: moto's standalone server
(`moto[server]`), run in a thread of the test process, so the fast tier can use it as it uses the loopback
hub. Clients (mirror's boto3 client in process, or `mirror` and hub clients in a subprocess given `env`)
talk to it over HTTP, as to any S3-compatible service; nothing in the client is mocked.

    def test_x(s3: S3Bucket) -> None:     # a fresh, empty bucket; AWS_* set for this process
        store_url = s3.url("store")        # s3://<bucket>/store
        subprocess.run([..., "--store", store_url], env={**os.environ, **s3.env})
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

# The credentials the fake service accepts (moto accepts any); fixed, so a test can assert they never show.
ACCESS_KEY = "AKIAMIRRORTESTKEY0001"
SECRET_KEY = "mirror-test-secret-never-printed-0001"
REGION = "us-east-1"


def s3_env(endpoint: str) -> dict[str, str]:
    """What points any S3 client (boto3, `mirror` in a subprocess) at the server at `endpoint`, with the
    fixed credentials, and nothing of the machine's own AWS setup."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": "/dev/null",  # no profile of the machine's user leaks in
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",  # never wait for an instance role
    }


@dataclass
class S3Server:
    """moto's server, running; `env` points any S3 client at it."""

    endpoint: str  # http://127.0.0.1:PORT
    server: Any = field(repr=False)
    _names: itertools.count[int] = field(default_factory=itertools.count, repr=False)

    @property
    def env(self) -> dict[str, str]:
        return s3_env(self.endpoint)

    def client(self) -> Any:
        """A boto3 client of its own (to arrange and inspect buckets behind mirror's back)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def new_bucket(self) -> S3Bucket:
        name = f"mirror-test-{next(self._names)}"
        self.client().create_bucket(Bucket=name)
        return S3Bucket(self, name)

    def stop(self) -> None:
        self.server.stop()


@dataclass
class S3Bucket:
    """A bucket of the server, created for one test."""

    server: S3Server
    name: str

    @property
    def env(self) -> dict[str, str]:
        return self.server.env

    def url(self, prefix: str = "") -> str:
        return f"s3://{self.name}/{prefix}" if prefix else f"s3://{self.name}"

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under `prefix`, sorted."""
        pages = (
            self.server.client().get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        )
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def read(self, key: str) -> bytes:
        data: bytes = self.server.client().get_object(Bucket=self.name, Key=key)["Body"].read()
        return data


def start_s3_server() -> S3Server:
    """Start moto's server on a free port of 127.0.0.1 (in a thread); `stop()` it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return S3Server(f"http://{host}:{port}", server)
