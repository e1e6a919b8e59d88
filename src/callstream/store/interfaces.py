"""The narrow storage interfaces every stage talks to (DESIGN.md, contract).

The engine and delivery code see only these protocols; the embedded backend
implements them on SQLite (``store/sqlite``), the distributed one on NATS
JetStream and PostgreSQL. Payloads cross them as bytes the stage encoded itself,
so no backend needs to know the telemetry or insight structs.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Protocol

import msgspec


def partition_of(call_sid: str, partitions: int) -> int:
    """The partition that owns a call: a stable hash, the same on every machine."""
    return zlib.crc32(call_sid.encode("ascii", "replace")) % partitions


class Account(msgspec.Struct, frozen=True, kw_only=True):
    sid: str
    auth_token: str
    friendly_name: str
    date_created: float


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    sid: str
    account_sid: str
    secret: str
    friendly_name: str
    date_created: float


class AccountStore(Protocol):
    async def create_account(self, account: Account) -> None: ...
    async def get_account(self, sid: str) -> Account | None: ...
    async def list_accounts(self) -> Sequence[Account]: ...
    async def create_api_key(self, key: ApiKey) -> None: ...
    async def get_api_key(self, sid: str) -> ApiKey | None: ...


class TelemetryChunk(msgspec.Struct, frozen=True):
    """The records of one ingest request that belong to one partition, encoded together.

    Storing a chunk per partition rather than a row per record is what lets one
    durable append keep up with hundreds of thousands of records a second.
    """

    partition: int
    records: int
    body: bytes


class LogEntry(msgspec.Struct, frozen=True):
    offset: int
    account_sid: str
    received_at: float
    records: int
    body: bytes


class TelemetryLog(Protocol):
    """Telemetry, durable and partitioned by call_sid, read by offset."""

    partitions: int

    async def append(self, account_sid: str, chunks: Sequence[TelemetryChunk]) -> None:
        """Store all chunks durably, or none."""
        ...

    async def read(self, partition: int, after: int, limit: int) -> Sequence[LogEntry]:
        """Chunks of one partition with offset > ``after``, oldest first, of about
        ``limit`` records in all (at least one chunk when there is one)."""
        ...

    async def read_all(self, after: int, limit: int) -> Sequence[LogEntry]:
        """Entries of every partition with offset > ``after``, oldest first (offline tools)."""
        ...

    async def wait(self, partition: int, after: int, timeout: float) -> None:
        """Return once the partition may hold entries past ``after``, or after ``timeout``."""
        ...

    def last_offset(self, partition: int) -> int:
        """The highest offset this process knows the partition to hold."""
        ...


CallKey = tuple[str, str]
"""(account_sid, call_sid): call SIDs are only unique within an account."""


class StoredCall(msgspec.Struct, frozen=True):
    """A call as the engine keeps it: its logic's state, and the ids of the records
    it has applied (so a record sent twice is applied once)."""

    state: bytes
    seen: bytes


class Timer(msgspec.Struct, frozen=True):
    """A call's timer (partial, predict, complete, ...), due at a Unix time."""

    account_sid: str
    call_sid: str
    kind: str
    due_at: float


class OutputEvent(msgspec.Struct, frozen=True):
    """An insight event as the engine stores it: canonical, before any schema version."""

    account_sid: str
    call_sid: str
    type: str
    identity: str
    time: float
    body: bytes


class PartitionCommit(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one engine step produced, made durable together or not at all.

    Applied in this order: ``cursor`` (the telemetry offset consumed up to; None
    leaves it), ``calls`` (new states of the calls touched), ``timers_done`` (fired
    timers, removed if still due at the same time), ``timers_cancelled`` (removed
    whatever their due time), ``timers_set`` (one per call and kind, replacing any),
    ``events`` (appended; an event already stored is not stored twice).
    """

    partition: int
    cursor: int | None = None
    calls: dict[CallKey, StoredCall] = {}
    timers_done: list[Timer] = []
    timers_cancelled: list[Timer] = []
    timers_set: list[Timer] = []
    events: list[OutputEvent] = []


class EventEntry(msgspec.Struct, frozen=True):
    offset: int
    event: OutputEvent


class EngineStore(Protocol):
    """The engine's durable view of one partition: cursor, call states, timers."""

    consumer: str

    async def cursor(self, partition: int) -> int: ...

    async def load_calls(
        self, partition: int, keys: Sequence[CallKey]
    ) -> dict[CallKey, StoredCall]:
        """The stored state of each call that has one."""
        ...

    async def due_timers(self, partition: int, now: float, limit: int) -> Sequence[Timer]:
        """Timers due at or before ``now``, earliest first."""
        ...

    async def next_due(self, partition: int) -> float | None: ...

    async def commit(self, commit: PartitionCommit) -> None: ...


class EventLog(Protocol):
    """Insight events in the order they were produced."""

    async def read(
        self, after: int, limit: int, account_sid: str | None = None
    ) -> Sequence[EventEntry]: ...

    async def last_offset(self) -> int: ...

    async def wait(self, after: int, timeout: float) -> None:
        """Return once events past ``after`` may exist, or after ``timeout``."""
        ...


class Lease(msgspec.Struct, frozen=True):
    """A worker's hold on a partition until ``expires_at`` (Unix time).

    ``token`` is the fencing token: it grows with every acquisition and renewal
    (in the NATS backend, the KV revision of the lease entry), and a write that
    presents an older one is refused.
    """

    partition: int
    owner: str
    token: int
    expires_at: float


class LeaseLost(Exception):
    """A write was fenced off: this worker no longer owns the partition."""


class PartitionLeases(Protocol):
    """Which worker owns which partition, when workers run on several machines.

    Each partition has at most one owner at a time; a worker that stops renewing
    loses its partitions when their leases expire, and ``rebalance`` makes every
    live worker hold about ``ceil(partitions / live workers)``.
    """

    owner: str

    async def acquire(self, partition: int) -> Lease | None:
        """The lease if the partition was free, expired, or already ours; else None."""
        ...

    async def renew(self, lease: Lease) -> Lease | None:
        """The lease extended (with a new token), or None when it was lost."""
        ...

    async def release(self, lease: Lease) -> None: ...

    async def owners(self) -> dict[int, Lease]:
        """The current, unexpired lease of each owned partition, as stored."""
        ...

    async def check(self, partition: int) -> None:
        """Raise LeaseLost unless this worker's lease on the partition is the stored one."""
        ...

    async def rebalance(self) -> dict[int, Lease]:
        """Heartbeat, renew, give up or take partitions toward a fair share; the leases held."""
        ...

    def held(self) -> dict[int, Lease]:
        """The leases this worker holds now (by its own clock, with a safety margin)."""
        ...
