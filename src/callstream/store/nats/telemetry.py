"""The telemetry log on JetStream: one stream, a subject per partition, a message per chunk.

Offsets are stream sequences. They grow monotonically within a partition (not
densely: other partitions' chunks take the numbers between), which is all the
engine needs of a cursor. ``read(partition, after)`` is a batched direct get of
the partition's subject from ``after + 1``.

``append`` is idempotent rather than atomic: each chunk carries a Nats-Msg-Id
derived from its content (account, partition, body). If the process dies after
storing some chunks of a request, the client gets no 202 and sends the request
again; the chunks already stored are dropped as duplicates within the stream's
duplicate window, and the engine skips any record it has applied (per-call
idempotency ids) even past the window.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence

from nats.aio.client import Client
from nats.js import JetStreamContext

from callstream.store.interfaces import LogEntry, TelemetryChunk
from callstream.store.nats.arrivals import Arrivals
from callstream.store.nats.layout import (
    DEFAULT_MAX_AGE,
    TELEMETRY_DUPLICATE_WINDOW,
    TELEMETRY_STREAM,
    TELEMETRY_SUBJECT,
    ensure_stream,
    telemetry_stream,
)
from callstream.store.nats.publish import publish_all
from callstream.store.nats.reads import StoredMsg, direct_batch, leader_get

ACCOUNT_HEADER = "Cs-Account"
RECORDS_HEADER = "Cs-Records"
RECEIVED_HEADER = "Cs-Received-At"
# A chunk holds hundreds of records; this many chunks per read request keeps a
# read of ``limit`` records to one round trip in the common case.
_RECORDS_PER_CHUNK_GUESS = 8


def chunk_id(account_sid: str, chunk: TelemetryChunk) -> str:
    """The chunk's de-duplication id: the same request sent again yields the same ids."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{account_sid}\x00{chunk.partition}\x00".encode())
    digest.update(chunk.body)
    return digest.hexdigest()


class NatsTelemetryLog:
    def __init__(
        self,
        nc: Client,
        partitions: int,
        replicas: int,
        duplicate_window: float = TELEMETRY_DUPLICATE_WINDOW,
        max_age: float = DEFAULT_MAX_AGE,
    ) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream()
        self.partitions = partitions
        self._replicas = replicas
        self._duplicate_window = duplicate_window
        self._max_age = max_age
        self._arrivals = Arrivals(TELEMETRY_SUBJECT)

    async def start(self) -> None:
        """Create the stream if absent, and follow appends made anywhere in the cluster."""
        await ensure_stream(
            self._js, telemetry_stream(self._replicas, self._duplicate_window, self._max_age)
        )
        await self._arrivals.start(self._nc)
        # What was stored before we subscribed: the last sequence of each partition.
        marks = await asyncio.gather(*(self._last_stored(p) for p in range(self.partitions)))
        await self._arrivals.marks.advance({str(p): m for p, m in enumerate(marks) if m})

    async def stop(self) -> None:
        await self._arrivals.stop()

    async def append(self, account_sid: str, chunks: Sequence[TelemetryChunk]) -> None:
        received_at = repr(time.time())
        acks = await publish_all(
            self._js,
            [
                (
                    _subject(chunk.partition),
                    chunk.body,
                    {
                        "Nats-Msg-Id": chunk_id(account_sid, chunk),
                        ACCOUNT_HEADER: account_sid,
                        RECORDS_HEADER: str(chunk.records),
                        RECEIVED_HEADER: received_at,
                    },
                )
                for chunk in chunks
            ],
        )
        await self._arrivals.marks.advance(
            {str(c.partition): ack.seq for c, ack in zip(chunks, acks, strict=True) if ack.seq}
        )

    async def read(self, partition: int, after: int, limit: int) -> Sequence[LogEntry]:
        msgs = await direct_batch(
            self._nc,
            TELEMETRY_STREAM,
            _subject(partition),
            after,
            max(1, limit // _RECORDS_PER_CHUNK_GUESS),
        )
        entries: list[LogEntry] = []
        total = 0
        for msg in msgs:
            entry = _entry(msg)
            entries.append(entry)
            total += entry.records
            if total >= limit:
                break
        return entries

    async def read_all(self, after: int, limit: int) -> Sequence[LogEntry]:
        msgs = await direct_batch(
            self._nc, TELEMETRY_STREAM, f"{TELEMETRY_SUBJECT}.*", after, max(1, limit)
        )
        return [_entry(msg) for msg in msgs]

    async def wait(self, partition: int, after: int, timeout: float) -> None:
        await self._arrivals.marks.wait(str(partition), after, timeout)

    def last_offset(self, partition: int) -> int:
        return self._arrivals.marks.get(str(partition))

    async def _last_stored(self, partition: int) -> int:
        msg = await leader_get(self._js, TELEMETRY_STREAM, _subject(partition))
        return 0 if msg is None else msg.seq


def _subject(partition: int) -> str:
    return f"{TELEMETRY_SUBJECT}.{partition}"


def _entry(msg: StoredMsg) -> LogEntry:
    headers = msg.headers
    return LogEntry(
        offset=msg.seq,
        account_sid=headers[ACCOUNT_HEADER],
        received_at=float(headers[RECEIVED_HEADER]),
        records=int(headers[RECORDS_HEADER]),
        body=msg.data,
    )
