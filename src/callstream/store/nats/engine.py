"""The engine's cursors, call states and timers on JetStream KV, and its commit.

JetStream has no transaction over several keys, so a commit is a sequence of
idempotent writes ordered so that a crash between any two of them, followed by a
replay of the step from the stored cursor, ends in the same events and states
(the argument in full: docs/decisions, nats-jetstream-engine-store):

1. fence: the worker's partition lease must still be the stored one;
2. events, each with a Nats-Msg-Id derived from its identity (a replayed one is dropped);
3. each touched call's entry in ``CS_CALLS``: state, applied record ids AND the
   call's timers, in one value, so a call's state and timers change together;
4. the timer hints in ``CS_TIMERS`` (one key per call with timers), which only
   say where to look: a timer fires only if the call entry still holds it;
5. the cursor, last, compare-and-set on the revision this worker last saw, so a
   stale owner can never move it.

Keys: ``CS_CALLS`` and ``CS_TIMERS`` use ``p<partition>.<hash of account+call>``
(call ids may hold characters a subject cannot), ``CS_CURSORS`` uses
``<consumer>.p<partition>``.

The owner of a partition keeps the partition's timers in memory (loaded from the
hints when it first needs them; ``cursor()`` starts a new ownership epoch and
reloads). Only the owner writes a partition, so after loading the view stays
exact; after a failed commit it is dropped and reloaded from the store.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from callstream.store.interfaces import (
    CallKey,
    LeaseLost,
    PartitionCommit,
    PartitionLeases,
    StoredCall,
    Timer,
)
from callstream.store.nats.events import publish_events
from callstream.store.nats.layout import (
    CALLS_BUCKET,
    CURSORS_BUCKET,
    DEFAULT_MAX_AGE,
    EVENTS_DUPLICATE_WINDOW,
    TIMERS_BUCKET,
    call_hash,
    ensure_bucket,
    ensure_stream,
    events_stream,
    kv_stream,
    kv_subject,
)
from callstream.store.nats.publish import Message, publish_all
from callstream.store.nats.reads import is_deleted, leader_get, leader_scan

# Concurrent leader reads of call entries (one request each).
_READ_CONCURRENCY = 64
# Call entries written per round of acks.
_WRITE_BATCH = 512


class CursorMoved(LeaseLost):
    """The cursor was written by someone else since this worker read it: a stale owner."""


class CallEntry(msgspec.Struct, frozen=True):
    """A call as stored: logic state (None until the call has had a record), the ids
    of the records applied, and the call's timers (kind -> due time)."""

    account_sid: str
    call_sid: str
    state: bytes | None
    seen: bytes
    timers: dict[str, float]


class TimerHint(msgspec.Struct, frozen=True):
    account_sid: str
    call_sid: str
    timers: dict[str, float]


_encode = msgspec.msgpack.Encoder().encode
_decode_entry = msgspec.msgpack.Decoder(CallEntry).decode
_decode_hint = msgspec.msgpack.Decoder(TimerHint).decode


@dataclass
class _PartitionTimers:
    """The owner's view of one partition's timers.

    ``calls`` holds every call with timers; ``verified`` the calls whose timers
    were read from (or written to) their call entry in this epoch. A hint not yet
    verified is checked against the call entry before its timer fires.
    """

    calls: dict[str, TimerHint] = field(default_factory=dict)
    verified: set[str] = field(default_factory=set)
    # What the hint keys in the store hold, to write only the ones that differ.
    hinted: dict[str, dict[str, float]] = field(default_factory=dict)

    def learn(self, h: str, account_sid: str, call_sid: str, timers: dict[str, float]) -> None:
        if timers:
            self.calls[h] = TimerHint(account_sid, call_sid, dict(timers))
        else:
            self.calls.pop(h, None)
        self.verified.add(h)

    def due(self, now: float) -> list[tuple[float, str, str]]:
        return [
            (due, h, kind)
            for h, hint in self.calls.items()
            for kind, due in hint.timers.items()
            if due <= now
        ]


class NatsEngineStore:
    def __init__(
        self,
        nc: Client,
        replicas: int,
        consumer: str = "engine",
        leases: PartitionLeases | None = None,
        events_duplicate_window: float = EVENTS_DUPLICATE_WINDOW,
        events_max_age: float = DEFAULT_MAX_AGE,
    ) -> None:
        self._js: JetStreamContext = nc.jetstream()
        self._replicas = replicas
        self.consumer = consumer
        self.leases = leases
        self._events_duplicate_window = events_duplicate_window
        self._events_max_age = events_max_age
        self._buckets: dict[str, KeyValue] = {}
        self._cursor_rev: dict[int, int] = {}
        # Partitions whose cursor another worker moved: refused until cursor() again.
        self._fenced: set[int] = set()
        # Partitions whose last cursor write got no answer: it may or may not be stored.
        self._unsure: set[int] = set()
        # Written with every cursor, to tell our own unanswered write from someone else's.
        self._writer = uuid.uuid4().hex
        self._timers: dict[int, _PartitionTimers] = {}
        self._reads = asyncio.Semaphore(_READ_CONCURRENCY)

    async def start(self) -> None:
        """Create the buckets and the events stream if absent."""
        for bucket in (CURSORS_BUCKET, CALLS_BUCKET, TIMERS_BUCKET):
            self._buckets[bucket] = await ensure_bucket(self._js, bucket, self._replicas)
        await ensure_stream(
            self._js,
            events_stream(self._replicas, self._events_duplicate_window, self._events_max_age),
        )

    # -- reads ------------------------------------------------------------------

    async def cursor(self, partition: int) -> int:
        """The stored cursor; also starts this worker's epoch on the partition."""
        self._timers.pop(partition, None)
        self._fenced.discard(partition)
        self._unsure.discard(partition)
        offset, _ = await self._read_cursor(partition)
        return offset

    async def load_calls(
        self, partition: int, keys: Sequence[CallKey]
    ) -> dict[CallKey, StoredCall]:
        entries = await asyncio.gather(*(self._entry(partition, key) for key in keys))
        view = self._timers.get(partition)
        found: dict[CallKey, StoredCall] = {}
        for key, entry in zip(keys, entries, strict=True):
            if view is not None:
                view.learn(call_hash(*key), *key, entry.timers if entry else {})
            if entry is not None and entry.state is not None:
                found[key] = StoredCall(entry.state, entry.seen)
        return found

    async def due_timers(self, partition: int, now: float, limit: int) -> Sequence[Timer]:
        view = await self._view(partition)
        unverified = {h for _, h, _ in view.due(now) if h not in view.verified}
        if unverified:
            await self._verify(partition, view, unverified)
        due = sorted(view.due(now))[:limit]
        return [
            Timer(view.calls[h].account_sid, view.calls[h].call_sid, kind, at)
            for at, h, kind in due
        ]

    async def next_due(self, partition: int) -> float | None:
        view = await self._view(partition)
        dues = [due for hint in view.calls.values() for due in hint.timers.values()]
        return min(dues) if dues else None

    async def pending_timers(self) -> int:
        """Timers stored in all partitions (hints checked against their call entries)."""
        total = 0
        async for msg in leader_scan(
            self._js, kv_stream(TIMERS_BUCKET), kv_subject(TIMERS_BUCKET, ">")
        ):
            if is_deleted(msg):
                continue
            hint = _decode_hint(msg.data)
            partition = int(msg.subject.split(".")[2][1:])
            entry = await self._entry(partition, (hint.account_sid, hint.call_sid))
            total += len(entry.timers) if entry else 0
        return total

    # -- commit -----------------------------------------------------------------

    async def commit(self, commit: PartitionCommit) -> None:
        partition = commit.partition
        if self.leases is not None:
            await self.leases.check(partition)
        try:
            await self._commit(commit)
        except BaseException:
            # Part of the commit may be stored: forget what we believed and reload.
            self._timers.pop(partition, None)
            raise

    async def _commit(self, commit: PartitionCommit) -> None:
        partition = commit.partition
        if partition in self._unsure:
            # Our last cursor write went unanswered: if the stored cursor is ours, it
            # landed; if it is someone else's, they took the partition meanwhile.
            _, writer = await self._read_cursor(partition)
            self._unsure.discard(partition)
            if writer not in ("", self._writer):
                self._fenced.add(partition)
        if partition in self._fenced:
            raise CursorMoved(f"partition {partition}: fenced off, read the cursor again")
        if partition not in self._cursor_rev:
            await self._read_cursor(partition)
        view = await self._view(partition)

        # 2. events
        if commit.events:
            await publish_events(self._js, commit.events)

        # 3. call entries, each with its timers merged in
        keys = list(commit.calls)
        for timer in (*commit.timers_done, *commit.timers_cancelled, *commit.timers_set):
            key = (timer.account_sid, timer.call_sid)
            if key not in commit.calls:
                keys.append(key)
        keys = list(dict.fromkeys(keys))
        stored = await self._current(partition, view, keys, commit)
        timers = {key: dict(stored[key].timers) for key in keys}
        for t in commit.timers_done:
            current = timers[(t.account_sid, t.call_sid)]
            if current.get(t.kind) == t.due_at:
                del current[t.kind]
        for t in commit.timers_cancelled:
            timers[(t.account_sid, t.call_sid)].pop(t.kind, None)
        for t in commit.timers_set:
            timers[(t.account_sid, t.call_sid)][t.kind] = t.due_at
        entries: list[tuple[CallKey, CallEntry]] = []
        for key in keys:
            call = commit.calls.get(key)
            old = stored[key]
            entries.append(
                (
                    key,
                    CallEntry(
                        key[0],
                        key[1],
                        call.state if call is not None else old.state,
                        call.seen if call is not None else old.seen,
                        timers[key],
                    ),
                )
            )
        for start in range(0, len(entries), _WRITE_BATCH):
            await publish_all(
                self._js,
                [
                    (kv_subject(CALLS_BUCKET, _call_key(partition, key)), _encode(entry), {})
                    for key, entry in entries[start : start + _WRITE_BATCH]
                ],
            )

        # 4. timer hints, where a call's timers changed
        await self._write_hints(partition, view, [(key, entry.timers) for key, entry in entries])
        for key, entry in entries:
            view.learn(call_hash(*key), *key, entry.timers)

        # 5. cursor, last, fenced by its revision
        if commit.cursor is not None:
            try:
                self._cursor_rev[partition] = await self._buckets[CURSORS_BUCKET].update(
                    self._cursor_key(partition),
                    f"{commit.cursor} {self._writer}".encode(),
                    last=self._cursor_rev[partition],
                )
            except KeyWrongLastSequenceError as err:
                self._fenced.add(partition)
                raise CursorMoved(
                    f"partition {partition}: cursor written by another worker"
                ) from err
            except BaseException:
                self._unsure.add(partition)
                raise

    # -- helpers ----------------------------------------------------------------

    async def _read_cursor(self, partition: int) -> tuple[int, str]:
        """The stored cursor and the store instance that wrote it; remembers its revision."""
        msg = await leader_get(
            self._js,
            kv_stream(CURSORS_BUCKET),
            kv_subject(CURSORS_BUCKET, self._cursor_key(partition)),
        )
        self._cursor_rev[partition] = 0 if msg is None else msg.seq
        if msg is None or is_deleted(msg):
            return 0, ""
        offset, _, writer = msg.data.decode().partition(" ")
        return int(offset), writer

    def _cursor_key(self, partition: int) -> str:
        return f"{self.consumer}.p{partition}"

    async def _entry(self, partition: int, key: CallKey) -> CallEntry | None:
        async with self._reads:
            subject = kv_subject(CALLS_BUCKET, _call_key(partition, key))
            msg = await leader_get(self._js, kv_stream(CALLS_BUCKET), subject)
        if msg is None or is_deleted(msg):
            return None
        return _decode_entry(msg.data)

    async def _current(
        self,
        partition: int,
        view: _PartitionTimers,
        keys: Sequence[CallKey],
        commit: PartitionCommit,
    ) -> dict[CallKey, CallEntry]:
        """What each call's entry holds now; read from the store unless known exactly."""
        current: dict[CallKey, CallEntry] = {}
        fetch: list[CallKey] = []
        for key in keys:
            h = call_hash(*key)
            if key in commit.calls and h in view.verified:
                hint = view.calls.get(h)
                current[key] = CallEntry(key[0], key[1], None, b"", hint.timers if hint else {})
            else:
                fetch.append(key)
        found = await asyncio.gather(*(self._entry(partition, key) for key in fetch))
        for key, entry in zip(fetch, found, strict=True):
            current[key] = entry or CallEntry(key[0], key[1], None, b"", {})
        return current

    async def _view(self, partition: int) -> _PartitionTimers:
        view = self._timers.get(partition)
        if view is None:
            view = _PartitionTimers()
            prefix = kv_subject(TIMERS_BUCKET, f"p{partition}.")
            async for msg in leader_scan(self._js, kv_stream(TIMERS_BUCKET), prefix + "*"):
                if not is_deleted(msg):
                    hint = _decode_hint(msg.data)
                    h = msg.subject[len(prefix) :]
                    view.calls[h] = hint
                    view.hinted[h] = hint.timers
            self._timers[partition] = view
        return view

    async def _verify(self, partition: int, view: _PartitionTimers, hashes: set[str]) -> None:
        """Replace hints by what the call entries say; repair hints that were stale."""
        hints = [(h, view.calls[h]) for h in hashes]
        entries = await asyncio.gather(
            *(self._entry(partition, (hint.account_sid, hint.call_sid)) for _, hint in hints)
        )
        changes = [
            ((hint.account_sid, hint.call_sid), entry.timers if entry else {})
            for (_, hint), entry in zip(hints, entries, strict=True)
        ]
        await self._write_hints(partition, view, changes)
        for key, timers in changes:
            view.learn(call_hash(*key), *key, timers)

    async def _write_hints(
        self,
        partition: int,
        view: _PartitionTimers,
        changes: Sequence[tuple[CallKey, dict[str, float]]],
    ) -> None:
        """Make each call's hint say what its entry says (a missing hint would hide a timer)."""
        messages: list[Message] = []
        written: dict[str, dict[str, float]] = {}
        for key, timers in changes:
            h = call_hash(*key)
            if view.hinted.get(h, {}) == timers:
                continue
            subject = kv_subject(TIMERS_BUCKET, _call_key(partition, key))
            if timers:
                messages.append((subject, _encode(TimerHint(*key, timers)), {}))
            else:
                messages.append((subject, b"", {"KV-Operation": "DEL"}))
            written[h] = dict(timers)
        for start in range(0, len(messages), _WRITE_BATCH):
            await publish_all(self._js, messages[start : start + _WRITE_BATCH])
        for h, timers in written.items():
            if timers:
                view.hinted[h] = timers
            else:
                view.hinted.pop(h, None)


def _call_key(partition: int, key: CallKey) -> str:
    return f"p{partition}.{call_hash(*key)}"
