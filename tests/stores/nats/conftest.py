"""Fixtures for the NATS JetStream backend tests: one real 3-node cluster per session.

Each test gets clean streams and buckets (the backend's names are fixed, so the
previous test's are deleted first) and opens its own connection inside its own
event loop. Test scenarios are async functions run with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import msgspec
import nats
import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from callstream.model.telemetry import TelemetryRecord
from callstream.store.interfaces import TelemetryChunk, partition_of
from callstream.store.nats.layout import (
    CALLS_BUCKET,
    CURSORS_BUCKET,
    EVENTS_STREAM,
    LEASES_BUCKET,
    TELEMETRY_STREAM,
    TIMERS_BUCKET,
    kv_stream,
)
from tests.natscluster import NatsCluster

STREAMS = [
    TELEMETRY_STREAM,
    EVENTS_STREAM,
    *(kv_stream(b) for b in (CURSORS_BUCKET, CALLS_BUCKET, TIMERS_BUCKET, LEASES_BUCKET)),
]
REPLICAS = 3
T = TypeVar("T")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    running = NatsCluster(Path(tmp_path_factory.mktemp("nats"))).start()
    yield running
    running.stop()


@pytest.fixture
def nats_cluster(cluster: NatsCluster) -> NatsCluster:
    """The session's cluster, all nodes up, with none of the backend's streams."""
    for node in cluster.nodes:
        if node.process is None:
            node.start()
    cluster.wait_ready()
    asyncio.run(_reset(cluster))
    return cluster


async def connect(cluster: NatsCluster) -> Client:
    return await nats.connect(
        servers=cluster.urls, connect_timeout=2, reconnect_time_wait=0.2, max_reconnect_attempts=-1
    )


async def _reset(cluster: NatsCluster) -> None:
    nc = await connect(cluster)
    try:
        js = nc.jetstream()
        for name in STREAMS:
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(name)
    finally:
        await nc.close()


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(scenario())  # type: ignore[arg-type]


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Wait for ``check`` to hold, polling, with a deadline (replicas catch up asynchronously)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout}s")
        await asyncio.sleep(0.05)


def chunks(records: list[TelemetryRecord], partitions: int) -> list[TelemetryChunk]:
    """The records as the ingest API stores them: one chunk per partition."""
    groups: dict[int, list[TelemetryRecord]] = {}
    for r in records:
        groups.setdefault(partition_of(r.call_sid, partitions), []).append(r)
    return [TelemetryChunk(p, len(g), msgspec.msgpack.encode(g)) for p, g in groups.items()]
