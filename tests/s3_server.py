"""A real S3-compatible server for the tests: moto's server mode, on a free port on 127.0.0.1,
in a thread of the test process. Worker processes and the browser reach it over HTTP like any
bucket. ``stop()`` then ``start()`` again brings it back on the same port with its objects (moto
keeps them in this process), which is how a test makes the bucket unreachable for a while."""

from __future__ import annotations

import os
import socket
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moto.server import ThreadedMotoServer

ACCESS_KEY = "sam3web-test-access"
SECRET_KEY = "sam3web-test-secret"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class S3Server:
    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._server: ThreadedMotoServer | None = None

    def start(self) -> S3Server:
        from moto.server import ThreadedMotoServer  # here: only tests that use a bucket pay

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def new_bucket(self) -> str:
        name = f"sam3web-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def env(self, bucket: str) -> dict[str, str]:
        """The variables that point sam3web (a worker process, the app) at ``bucket``."""
        return {
            "AWS_STORAGE_BUCKET_NAME": bucket,
            "AWS_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_S3_REGION_NAME": REGION,
        }


def storage_settings(server: S3Server, bucket: str) -> dict[str, Any]:
    """STORAGES["default"] as sam3web's settings make it for ``bucket`` on ``server``."""
    from sam3web.settings import s3_storage

    saved = {k: os.environ.get(k) for k in server.env(bucket)}
    os.environ.update(server.env(bucket))
    try:
        return s3_storage(bucket)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
