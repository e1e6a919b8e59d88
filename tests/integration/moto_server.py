"""A moto server (AWS Kinesis and STS on 127.0.0.1) in a subprocess, for tests and benchmarks
that write to Kinesis the way callstream does in production: over HTTP, signed, via STS."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx

from tests.integration.server import free_port

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account: assumed roles of it write to its streams
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@dataclass
class MotoServer:
    log_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def aws_env(self) -> dict[str, str]:
        """What a process needs to reach this server through the AWS SDK's own settings."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            **CREDENTIALS,
        }

    def start(self, timeout: float = 30.0) -> MotoServer:
        log = (self.log_dir / f"moto-{self.port}.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto exited with {self.process.returncode}")
            try:
                httpx.get(f"{self.url}/moto-api/", timeout=1.0)
                return self
            except httpx.TransportError:
                time.sleep(0.05)  # polling interval while waiting on a condition with a deadline
        raise TimeoutError(f"moto not up within {timeout}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kinesis(self) -> Any:
        return boto3.client(
            "kinesis",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def create_stream(self, shards: int = 2) -> str:
        """A new ACTIVE stream; returns its ARN."""
        name = f"callstream-{uuid.uuid4().hex[:12]}"
        client = self.kinesis()
        client.create_stream(StreamName=name, ShardCount=shards)
        client.get_waiter("stream_exists").wait(
            StreamName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
        )
        arn: str = client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"][
            "StreamARN"
        ]
        return arn


@dataclass(frozen=True)
class Record:
    shard: str
    sequence: int
    key: str
    data: bytes


def read_stream(moto: MotoServer, arn: str) -> list[Record]:
    """Every record of the stream, from every shard, each shard in sequence order."""
    client = moto.kinesis()
    records: list[Record] = []
    for shard in client.list_shards(StreamARN=arn)["Shards"]:
        iterator = client.get_shard_iterator(
            StreamARN=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = client.get_records(StreamARN=arn, ShardIterator=iterator, Limit=10_000)
            records += [
                Record(shard["ShardId"], int(r["SequenceNumber"]), r["PartitionKey"], r["Data"])
                for r in page["Records"]
            ]
            if not page["Records"] or page.get("MillisBehindLatest", 0) == 0:
                break
            iterator = page.get("NextShardIterator")
    return records


def moto_server(log_dir: Path) -> Iterator[MotoServer]:
    """For fixtures: a started server, stopped afterwards."""
    server = MotoServer(log_dir).start()
    try:
        yield server
    finally:
        server.stop()
