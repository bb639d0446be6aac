"""A throwaway S3-compatible server for tests: moto's S3 served over HTTP on 127.0.0.1.

Clients (the ``dvc`` CLI in a subprocess) talk to it over real HTTP with real SigV4
signatures, like they would talk to AWS or MinIO. The server runs in a thread of the test
process (``moto.server.ThreadedMotoServer``) on a port the OS picks, so parallel runs never
collide on a port and stopping it is a method call, not a process kill.

Authentication is switched on once the bucket and an IAM user exist: from then on the
server rejects requests whose signature does not match that user's secret key, so a test
can prove that the credentials it hands to a client are the ones the client used.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import boto3
import requests
from moto.server import ThreadedMotoServer

# Moto checks signatures only after this many unauthenticated requests; "inf" (its default)
# means never. The setting is process-wide, so it is put back when the server stops.
_AUTH_ON = "0"
_AUTH_OFF = "inf"

# Any region works against moto; it must only be the same for signing and verifying.
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    """Where the server listens and the one user allowed to use its bucket."""

    endpoint_url: str
    bucket: str
    access_key_id: str
    secret_access_key: str

    def client(self, secret_access_key: str | None = None):
        """A boto3 S3 client for this server (with the user's secret unless one is given)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=secret_access_key or self.secret_access_key,
        )

    def keys(self, prefix: str = "") -> set[str]:
        """Every object key in the bucket under ``prefix`` (paginated: no 1,000-key cap)."""
        pages = (
            self.client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=prefix)
        )
        return {item["Key"] for page in pages for item in page.get("Contents", [])}


def bucket_policy(bucket: str) -> dict:
    """Allow every S3 action on ``bucket`` and its keys, nothing elsewhere.

    Not the least privilege DVC needs (docs/remote.md lists that for AWS): moto checks IAM
    against API operation names (s3:ListObjectsV2, s3:HeadObject) where AWS checks IAM
    actions (s3:ListBucket, s3:GetObject), so a minimal AWS policy cannot be proven here.
    """
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "s3:*",
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
            }
        ],
    }


def _set_auth(endpoint_url: str, value: str) -> None:
    """Switch moto's signature checks on ("0") or off ("inf") through its admin API."""
    response = requests.post(f"{endpoint_url}/moto-api/reset-auth", data=value, timeout=60)
    if response.status_code != 200:
        raise RuntimeError(
            f"moto at {endpoint_url}: POST /moto-api/reset-auth {value!r} answered "
            f"{response.status_code}: {response.text[:500]}"
        )


@contextmanager
def moto_s3_server(bucket: str, user: str = "d2v-ci") -> Iterator[S3Server]:
    """Serve S3 on 127.0.0.1, create ``bucket`` and an IAM ``user`` with :func:`bucket_policy`.

    Yields once signatures are enforced. On exit, auth is switched off again, every moto
    backend is reset (buckets and users live in this process) and the server is stopped.
    """
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint_url = f"http://{host}:{port}"
    try:
        # Set-up requests go through before auth is on, so these credentials are arbitrary.
        admin = {
            "endpoint_url": endpoint_url,
            "region_name": REGION,
            "aws_access_key_id": "setup",
            "aws_secret_access_key": "setup",
        }
        boto3.client("s3", **admin).create_bucket(Bucket=bucket)
        iam = boto3.client("iam", **admin)
        iam.create_user(UserName=user)
        iam.put_user_policy(
            UserName=user, PolicyName="bucket", PolicyDocument=json.dumps(bucket_policy(bucket))
        )
        key = iam.create_access_key(UserName=user)["AccessKey"]
        _set_auth(endpoint_url, _AUTH_ON)
        yield S3Server(endpoint_url, bucket, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        try:
            _set_auth(endpoint_url, _AUTH_OFF)
            requests.post(f"{endpoint_url}/moto-api/reset", timeout=60)
        finally:
            server.stop()
