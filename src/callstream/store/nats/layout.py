"""Names and configuration of the streams and buckets the NATS backend uses.

Every stream and bucket is created on first use if absent, with the replica count
the deployment chose (3 on a 3-node cluster: one node may fail). Creating is
idempotent; an existing stream keeps its configuration (changing replicas of a
running stream is an operator's decision, ``nats stream edit``).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (
    KeyValueConfig,
    RePublish,
    StorageType,
    StreamConfig,
)
from nats.js.errors import (
    BadRequestError,
    NoStreamResponseError,
    NotFoundError,
    ServiceUnavailableError,
)
from nats.js.kv import KeyValue

T = TypeVar("T")

TELEMETRY_STREAM = "CS_TELEMETRY"
TELEMETRY_SUBJECT = "cs.telemetry"
EVENTS_STREAM = "CS_EVENTS"
EVENTS_SUBJECT = "cs.events"
# Where a stream republishes, headers only, what it has stored: readers wait on
# these to wake when a log grows, and learn the new sequence without a request.
APPENDED_SUBJECT = "cs.appended"
CURSORS_BUCKET = "CS_CURSORS"
CALLS_BUCKET = "CS_CALLS"
TIMERS_BUCKET = "CS_TIMERS"
LEASES_BUCKET = "CS_LEASES"

# A retried ingest request comes back within seconds to minutes (client retry
# schedules); ten minutes covers them with room.
TELEMETRY_DUPLICATE_WINDOW = 600.0
# An engine step is replayed when its worker crashed or lost its partition: the
# new owner takes over within seconds (lease TTL), so ten minutes is far longer
# than any replay in normal operation; the server keeps every id of the window in
# memory, about 100 bytes each (see the decision record for what happens past it).
EVENTS_DUPLICATE_WINDOW = 600.0
# How long the logs keep entries. The engine must never fall further behind than
# this, nor the readers of the events log (router, indexer).
DEFAULT_MAX_AGE = 7 * 24 * 3600.0


def default_replicas(cluster_size: int) -> int:
    """R3 when the cluster has three nodes or more (tolerates one loss), else R1."""
    return 3 if cluster_size >= 3 else 1


def kv_stream(bucket: str) -> str:
    return f"KV_{bucket}"


def kv_subject(bucket: str, key: str) -> str:
    return f"$KV.{bucket}.{key}"


def call_hash(account_sid: str, call_sid: str) -> str:
    """A KV-safe fixed-length key part for a call.

    Call ids come from gateways and SDKs and may hold characters a NATS subject
    cannot (spaces, ``*``, ``>``); a 128-bit hash keeps keys short and valid.
    """
    raw = f"{account_sid}\x00{call_sid}".encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


# How long start-up keeps retrying while the cluster elects its leaders.
START_TIMEOUT = 30.0
_TRANSIENT = (NatsTimeoutError, NoRespondersError, ServiceUnavailableError, NoStreamResponseError)


async def _retrying(action: Callable[[], Awaitable[T]]) -> T:
    """Run ``action``, again on the errors a cluster gives while it elects a leader."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT
    while True:
        try:
            return await action()
        except _TRANSIENT:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.5)


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream unless it exists."""
    await _retrying(lambda: _ensure_stream(js, config))


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.stream_info(config.name or "")
        return
    except NotFoundError:
        pass
    try:
        await js.add_stream(config)
    except BadRequestError as err:
        # Another worker created it at the same time (stream name already in use).
        if err.err_code != 10058:
            raise


async def ensure_bucket(
    js: JetStreamContext, bucket: str, replicas: int, history: int = 1
) -> KeyValue:
    """The bucket, created unless it exists (see ``_ensure_bucket``)."""
    return await _retrying(lambda: _ensure_bucket(js, bucket, replicas, history))


async def _ensure_bucket(
    js: JetStreamContext, bucket: str, replicas: int, history: int
) -> KeyValue:
    """The bucket, created unless it exists.

    ``direct=False``: reads go to the stream leader. Direct gets may be answered
    by a follower that has not applied the latest write (no read-your-writes),
    and the engine must read back the call state it wrote a moment ago.
    """
    try:
        return await js.key_value(bucket)
    except NotFoundError:
        pass
    return await js.create_key_value(
        KeyValueConfig(
            bucket=bucket,
            history=history,
            replicas=replicas,
            storage=StorageType.FILE,
            direct=False,
        )
    )


def telemetry_stream(
    replicas: int, duplicate_window: float, max_age: float = DEFAULT_MAX_AGE
) -> StreamConfig:
    return StreamConfig(
        name=TELEMETRY_STREAM,
        subjects=[f"{TELEMETRY_SUBJECT}.*"],
        num_replicas=replicas,
        storage=StorageType.FILE,
        duplicate_window=duplicate_window,
        max_age=max_age,
        # Reads are batched direct gets: any replica may answer, and a replica
        # always holds a prefix of the log, so a lagging one only returns less.
        allow_direct=True,
        republish=_appended(TELEMETRY_SUBJECT),
    )


def events_stream(
    replicas: int, duplicate_window: float, max_age: float = DEFAULT_MAX_AGE
) -> StreamConfig:
    return StreamConfig(
        name=EVENTS_STREAM,
        subjects=[f"{EVENTS_SUBJECT}.*"],
        num_replicas=replicas,
        storage=StorageType.FILE,
        duplicate_window=duplicate_window,
        max_age=max_age,
        allow_direct=True,
        republish=_appended(EVENTS_SUBJECT),
    )


def appended_subject(subject: str) -> str:
    return f"{APPENDED_SUBJECT}.{subject}"


def _appended(subject: str) -> RePublish:
    return RePublish(
        src=f"{subject}.*",
        dest=f"{appended_subject(subject)}.{{{{wildcard(1)}}}}",
        headers_only=True,
    )
