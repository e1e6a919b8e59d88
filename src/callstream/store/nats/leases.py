"""Partition leases with fencing on a JetStream KV bucket (``CS_LEASES``).

A partition's lease is the key ``p.<partition>``, its value the owner and an
expiry time. Every write is a compare-and-set on the key's revision (create
when absent, update when the revision read is still the last one), so two
workers can never both succeed in taking the same lease; the revision a worker
wrote is its fencing token, checked by the engine store before it commits.

Expiry is judged by the clocks of the workers (the value holds the holder's
clock + TTL): the holder treats the lease as its own only until ``expires_at -
margin``, a taker only after ``expires_at``, so ownership never overlaps while
clocks agree to within the margin (NTP gives milliseconds; the margin is a
quarter of the TTL).

Workers announce themselves with a heartbeat key ``w.<owner>``; the number of
live heartbeats sets each worker's fair share, ``ceil(partitions / workers)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import socket
import time
import uuid
import zlib
from collections.abc import Callable

import msgspec
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from callstream.store.interfaces import Lease, LeaseLost
from callstream.store.nats.layout import LEASES_BUCKET, ensure_bucket, kv_stream, kv_subject
from callstream.store.nats.reads import is_deleted, leader_get, leader_scan

DEFAULT_TTL = 5.0


class LeaseValue(msgspec.Struct, frozen=True):
    owner: str
    expires_at: float


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(LeaseValue).decode
_FREE = LeaseValue("", 0.0)


def worker_id() -> str:
    """A name unique to this process's lifetime (a restarted worker is a new owner)."""
    raw = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return re.sub(r"[^A-Za-z0-9_-]", "_", raw)


class NatsPartitionLeases:
    def __init__(
        self,
        nc: Client,
        partitions: int,
        replicas: int,
        owner: str | None = None,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.time,
        scope: str = "",
    ) -> None:
        self._js: JetStreamContext = nc.jetstream()
        self.partitions = partitions
        self._replicas = replicas
        self.owner = owner or worker_id()
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.owner):
            raise ValueError(f"owner id must be letters, digits, '_' or '-': {self.owner!r}")
        if scope and not re.fullmatch(r"[A-Za-z0-9_-]+", scope):
            raise ValueError(f"scope must be letters, digits, '_' or '-': {scope!r}")
        # Keys of a scope ("router", "indexer") live beside the engine's partitions
        # in the same bucket: ``<scope>.p.<n>`` and ``<scope>.w.<owner>``.
        self._prefix = f"{scope}." if scope else ""
        self.ttl = ttl
        self.margin = ttl / 4
        self._clock = clock
        self._kv: KeyValue | None = None
        self._held: dict[int, Lease] = {}
        # Where this worker starts looking for free partitions, so that workers
        # starting together do not all race for partition 0 first.
        self._start_at = zlib.crc32(self.owner.encode()) % max(1, partitions)

    async def start(self) -> None:
        self._kv = await ensure_bucket(self._js, LEASES_BUCKET, self._replicas)

    @property
    def kv(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("NatsPartitionLeases.start() was not awaited")
        return self._kv

    def held(self) -> dict[int, Lease]:
        limit = self._clock() + self.margin
        return {p: lease for p, lease in self._held.items() if lease.expires_at > limit}

    async def acquire(self, partition: int) -> Lease | None:
        now = self._clock()
        stored = await leader_get(self._js, kv_stream(LEASES_BUCKET), self._subject(partition))
        last = 0
        if stored is not None:
            last = stored.seq
            if not is_deleted(stored):
                current = _decode(stored.data)
                if current.owner not in ("", self.owner) and current.expires_at > now:
                    return None
        return await self._write(partition, last, now)

    async def renew(self, lease: Lease) -> Lease | None:
        return await self._write(lease.partition, lease.token, self._clock())

    async def release(self, lease: Lease) -> None:
        self._held.pop(lease.partition, None)
        # Lost already (someone else wrote since): nothing of ours to release.
        with contextlib.suppress(KeyWrongLastSequenceError):
            await self.kv.update(self._key(lease.partition), _encode(_FREE), last=lease.token)

    async def owners(self) -> dict[int, Lease]:
        now = self._clock()
        stored = await asyncio.gather(
            *(
                leader_get(self._js, kv_stream(LEASES_BUCKET), self._subject(p))
                for p in range(self.partitions)
            )
        )
        found: dict[int, Lease] = {}
        for partition, msg in enumerate(stored):
            if msg is None or is_deleted(msg):
                continue
            value = _decode(msg.data)
            if value.owner and value.expires_at > now:
                found[partition] = Lease(partition, value.owner, msg.seq, value.expires_at)
        return found

    async def check(self, partition: int) -> None:
        lease = self.held().get(partition)
        if lease is None:
            raise LeaseLost(f"partition {partition}: no current lease held by {self.owner}")
        stored = await leader_get(self._js, kv_stream(LEASES_BUCKET), self._subject(partition))
        if stored is None or stored.seq != lease.token:
            self._held.pop(partition, None)
            raise LeaseLost(f"partition {partition}: lease token {lease.token} is stale")

    async def heartbeat(self) -> None:
        value = LeaseValue(self.owner, self._clock() + self.ttl)
        await self.kv.put(f"{self._prefix}w.{self.owner}", _encode(value))

    async def live_workers(self) -> list[str]:
        now = self._clock()
        live: set[str] = {self.owner}
        async for msg in leader_scan(
            self._js, kv_stream(LEASES_BUCKET), kv_subject(LEASES_BUCKET, f"{self._prefix}w.*")
        ):
            if is_deleted(msg):
                continue
            value = _decode(msg.data)
            if value.expires_at > now:
                live.add(value.owner)
        return sorted(live)

    def fair_share(self, workers: int) -> int:
        return math.ceil(self.partitions / max(1, workers))

    async def rebalance(self) -> dict[int, Lease]:
        await self.heartbeat()
        target = self.fair_share(len(await self.live_workers()))
        renewed = await asyncio.gather(*(self.renew(lease) for lease in list(self._held.values())))
        held = sorted(lease.partition for lease in renewed if lease is not None)
        # Above the fair share (a worker joined): hand back the surplus.
        for partition in held[target:]:
            await self.release(self._held[partition])
        if len(self.held()) < target:
            taken = await self.owners()
            order = [(self._start_at + i) % self.partitions for i in range(self.partitions)]
            for partition in order:
                if len(self.held()) >= target:
                    break
                if partition not in taken and partition not in self._held:
                    await self.acquire(partition)
        return self.held()

    async def stop(self) -> None:
        """Hand back every lease and leave, so others take over without waiting for expiry."""
        for lease in list(self._held.values()):
            await self.release(lease)
        await self.kv.delete(f"{self._prefix}w.{self.owner}")

    async def _write(self, partition: int, last: int, now: float) -> Lease | None:
        expires_at = now + self.ttl
        try:
            token = await self.kv.update(
                self._key(partition), _encode(LeaseValue(self.owner, expires_at)), last=last
            )
        except KeyWrongLastSequenceError:
            # Someone else wrote the lease since we read it: it is theirs.
            self._held.pop(partition, None)
            return None
        lease = Lease(partition, self.owner, token, expires_at)
        self._held[partition] = lease
        return lease

    def _key(self, partition: int) -> str:
        return f"{self._prefix}p.{partition}"

    def _subject(self, partition: int) -> str:
        return kv_subject(LEASES_BUCKET, self._key(partition))
