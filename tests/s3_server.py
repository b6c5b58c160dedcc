"""A real S3-protocol server for tests: moto's standalone server, a child process on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from lakeloop.services import free_port

ACCESS_KEY = "lakeloop-test"
SECRET_KEY = "lakeloop-test-secret"
REGION = "us-east-1"


class S3Server:
    """`moto_server` on a free port; `environment()` gives the standard AWS variables that point clients at it."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it accepts connections."""
        moto_server = Path(sys.executable).parent / "moto_server"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen([str(moto_server), "-H", "127.0.0.1", "-p", str(self.port)],
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto_server exited: {self.log_path.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"moto_server did not listen on {self.endpoint} within {timeout:.0f} s")

    def stop(self) -> None:
        """Stop the server this object started."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None

    def environment(self) -> dict[str, str]:
        """The AWS variables pyarrow, boto3 and MLflow read: credentials, region, this endpoint."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": REGION,
                "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL_S3": self.endpoint, "AWS_EC2_METADATA_DISABLED": "true"}

    def create_bucket(self, name: str) -> None:
        """Create a bucket (what `minio-init` does in docker-compose)."""
        import boto3

        env = self.environment()
        boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=name)
