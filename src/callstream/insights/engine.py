"""The engine runtime: one worker per partition, telemetry in, insight events out.

Each worker owns its partition (DESIGN.md: one owner per partition, records of a
call in arrival order). A step reads a batch of telemetry and the timers that
are due, runs the call logic on each call touched, and commits the new cursor,
call states, timers and events together, so a crash replays the step and
nothing is lost or half-done.

Records carry idempotency ids; the runtime remembers, per call, the ids it has
applied and skips a record it has seen, so a batch a sender retried after a lost
202 is counted once. Calls in progress stay decoded in a bounded cache between
steps; the database is the truth, and the cache is dropped for any step that fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
import structlog

from callstream.insights.step import Step
from callstream.model.insights import InsightEvent
from callstream.model.telemetry import TelemetryRecord
from callstream.store.interfaces import (
    CallKey,
    EngineStore,
    LeaseLost,
    LogEntry,
    OutputEvent,
    PartitionCommit,
    PartitionLeases,
    StoredCall,
    TelemetryLog,
    Timer,
)

log = structlog.get_logger(__name__)

BATCH_RECORDS = 4000
BATCH_TIMERS = 1000
# How long an idle worker sleeps before it looks again (a timer or an append wakes it sooner).
MAX_IDLE = 1.0
# Calls kept decoded between steps, per worker.
CACHE_CALLS = 2000


class CallLogic(Protocol):
    """The per-call insight logic the runtime drives (``callstream.insights.call``)."""

    def new_state(self, account_sid: str, call_sid: str) -> Any: ...
    def decode_state(self, raw: bytes) -> Any: ...
    def encode_state(self, state: Any) -> bytes: ...
    def apply(self, state: Any, records: Sequence[TelemetryRecord], now: float) -> Step: ...
    def fire(self, state: Any, kind: str, now: float) -> Step: ...


_chunk_decoder = msgspec.msgpack.Decoder(list[TelemetryRecord])
_event_encoder = msgspec.msgpack.Encoder()


def record_key(record_id: str) -> int:
    """A stable 64-bit key for an idempotency id (collisions within one call: ~1e-14)."""
    digest = hashlib.blake2b(record_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def output_event(event: InsightEvent) -> OutputEvent:
    """An insight event as the events log keeps it (canonical, msgpack)."""
    assert event.call_sid is not None
    return OutputEvent(
        account_sid=event.account_sid,
        call_sid=event.call_sid,
        type=event.event_type,
        identity=event.identity,
        time=event.time.timestamp(),
        body=_event_encoder.encode(event),
    )


@dataclass
class LiveCall:
    """A call as a worker holds it during and between steps."""

    state: Any
    seen: set[int]

    def stored(self, logic: CallLogic) -> StoredCall:
        return StoredCall(logic.encode_state(self.state), array("q", self.seen).tobytes())


async def _sleep_unless(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)


class PartitionWorker:
    def __init__(
        self,
        partition: int,
        log: TelemetryLog,
        store: EngineStore,
        logic: CallLogic,
        clock: Callable[[], float] = time.time,
        cache_calls: int = CACHE_CALLS,
    ) -> None:
        self.partition = partition
        self.log = log
        self._log = log
        self._store = store
        self._logic = logic
        self._clock = clock
        self._cache: OrderedDict[CallKey, LiveCall] = OrderedDict()
        self._cache_calls = cache_calls
        self.cursor = 0
        self.processed = 0
        self.duplicates = 0

    async def run(self, stopping: asyncio.Event) -> None:
        # A new period of ownership: another worker may have moved the partition on
        # since this one last ran it, so nothing cached from then is the truth.
        self._cache.clear()
        self.cursor = await self._store.cursor(self.partition)
        failures = 0
        while not stopping.is_set():
            try:
                worked = await self.step()
            except LeaseLost:
                # Another worker owns the partition now (only the distributed backend
                # fences): this ownership is over; the engine may start it again later.
                log.warning("engine partition lost", partition=self.partition)
                return
            except Exception:
                # Nothing of a failed step was committed; it is retried from the same
                # cursor, with backoff so a persistent fault does not spin.
                failures += 1
                log.exception("engine step failed", partition=self.partition, failures=failures)
                await _sleep_unless(stopping, min(30.0, 0.1 * 2 ** min(failures, 9)))
                continue
            failures = 0
            if not worked:
                await self._idle(stopping)

    async def step(self) -> bool:
        """Process one batch of telemetry and due timers; False when there was nothing."""
        entries = await self._log.read(self.partition, self.cursor, BATCH_RECORDS)
        now = self._clock()
        timers = await self._store.due_timers(self.partition, now, BATCH_TIMERS)
        if not entries and not timers:
            return False
        try:
            commit = await self._run(entries, timers, now)
            await self._store.commit(commit)
        except BaseException:
            # The logic changed cached states in place; the database still has the truth.
            self._cache.clear()
            raise
        if commit.cursor is not None:
            self.cursor = commit.cursor
        self.processed += sum(entry.records for entry in entries)
        return True

    async def _idle(self, stopping: asyncio.Event) -> None:
        next_due = await self._store.next_due(self.partition)
        timeout = MAX_IDLE
        if next_due is not None:
            timeout = min(MAX_IDLE, max(0.0, next_due - self._clock()))
        if timeout <= 0:
            return
        waiter = asyncio.ensure_future(self._log.wait(self.partition, self.cursor, timeout))
        stopper = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, stopper):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _run(
        self, entries: Sequence[LogEntry], timers: Sequence[Timer], now: float
    ) -> PartitionCommit:
        by_call: dict[CallKey, list[TelemetryRecord]] = {}
        for entry in entries:
            account_sid = entry.account_sid
            for record in _chunk_decoder.decode(entry.body):
                key = (account_sid, record.call_sid)
                batch = by_call.get(key)
                if batch is None:
                    by_call[key] = [record]
                else:
                    batch.append(record)
        timers_by_call: dict[CallKey, list[Timer]] = {}
        for timer in timers:
            timers_by_call.setdefault((timer.account_sid, timer.call_sid), []).append(timer)
        keys = list(by_call.keys() | timers_by_call.keys())
        calls = await self._load(keys)

        stored: dict[CallKey, StoredCall] = {}
        events: list[OutputEvent] = []
        timers_set: list[Timer] = []
        timers_cancelled: list[Timer] = []
        for key in keys:
            call = calls[key]
            step = Step()
            records = self._unseen(call, by_call.get(key, ()))
            if records:
                step.merge(self._logic.apply(call.state, records, now))
            for timer in timers_by_call.get(key, ()):
                step.merge(self._logic.fire(call.state, timer.kind, now))
            stored[key] = call.stored(self._logic)
            events.extend(output_event(e) for e in step.events)
            for kind, due in step.timers.items():
                timer = Timer(key[0], key[1], kind, due if due is not None else 0.0)
                (timers_set if due is not None else timers_cancelled).append(timer)
        return PartitionCommit(
            partition=self.partition,
            cursor=entries[-1].offset if entries else None,
            calls=stored,
            timers_done=list(timers),
            timers_cancelled=timers_cancelled,
            timers_set=timers_set,
            events=events,
        )

    def _unseen(self, call: LiveCall, records: Sequence[TelemetryRecord]) -> list[TelemetryRecord]:
        fresh: list[TelemetryRecord] = []
        seen = call.seen
        for record in records:
            key = record_key(record.id)
            if key in seen:
                self.duplicates += 1
                continue
            seen.add(key)
            fresh.append(record)
        return fresh

    async def _load(self, keys: Sequence[CallKey]) -> dict[CallKey, LiveCall]:
        calls: dict[CallKey, LiveCall] = {}
        missing: list[CallKey] = []
        for key in keys:
            cached = self._cache.get(key)
            if cached is None:
                missing.append(key)
            else:
                self._cache.move_to_end(key)
                calls[key] = cached
        if missing:
            found = await self._store.load_calls(self.partition, missing)
            for key in missing:
                row = found.get(key)
                if row is None:
                    call = LiveCall(self._logic.new_state(*key), set())
                else:
                    seen = array("q")
                    seen.frombytes(row.seen)
                    call = LiveCall(self._logic.decode_state(row.state), set(seen))
                calls[key] = call
                self._cache[key] = call
        while len(self._cache) > self._cache_calls:
            self._cache.popitem(last=False)
        return calls


class Engine:
    """The partition workers of one process.

    Without leases (the embedded backend) it runs every partition. With leases (the
    distributed backend) it runs only the partitions this process holds: a loop calls
    ``rebalance()`` every TTL/4, starts a worker for each partition gained and stops the
    worker of each partition lost; a worker whose commit is fenced off ends by itself.
    """

    def __init__(
        self,
        log: TelemetryLog,
        store: EngineStore,
        logic: CallLogic,
        clock: Callable[[], float] = time.time,
        leases: PartitionLeases | None = None,
        rebalance_every: float = 1.25,
    ) -> None:
        self._all = [PartitionWorker(p, log, store, logic, clock) for p in range(log.partitions)]
        self._leases = leases
        self._rebalance_every = rebalance_every
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Leased mode: the running ownership of each partition (its task, its stop signal).
        self._owned: dict[int, tuple[asyncio.Task[None], asyncio.Event]] = {}
        self._balancer: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._leases is not None:
            self._balancer = asyncio.create_task(self._balance(), name="engine-leases")
            return
        self._tasks = [
            asyncio.create_task(w.run(self._stopping), name=f"engine-{w.partition}")
            for w in self._all
        ]

    async def stop(self) -> None:
        """Let each worker finish the step it is in, then return (and hand leases back)."""
        self._stopping.set()
        if self._balancer is not None:
            await asyncio.gather(self._balancer, return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for partition in list(self._owned):
            await self._drop(partition)
        if self._leases is not None:
            for lease in list(self._leases.held().values()):
                with contextlib.suppress(Exception):  # expiry frees it anyway
                    await self._leases.release(lease)

    def owned(self) -> list[int]:
        """The partitions this process runs now."""
        if self._leases is None:
            return [w.partition for w in self._all]
        return sorted(p for p, (task, _) in self._owned.items() if not task.done())

    async def _balance(self) -> None:
        assert self._leases is not None
        while not self._stopping.is_set():
            try:
                held = set(await self._leases.rebalance())
            except Exception:
                # NATS unreachable: keep what runs; leases the store can no longer
                # confirm fence the commits, and held() drops them once they expire.
                log.exception("engine rebalance failed")
                held = set(self._leases.held())
            await self._apply(held)
            await _sleep_unless(self._stopping, self._rebalance_every)

    async def _apply(self, held: set[int]) -> None:
        assert self._leases is not None
        for partition in list(self._owned):
            task, _ = self._owned[partition]
            if partition not in held:
                await self._drop(partition)
            elif task.done():
                # Fenced off (LeaseLost): the lease we think we hold is stale.
                await self._drop(partition)
                held.discard(partition)  # not again before the next rebalance
                lease = self._leases.held().get(partition)
                if lease is not None:
                    with contextlib.suppress(Exception):
                        await self._leases.release(lease)
        for partition in sorted(held - self._owned.keys()):
            if self._stopping.is_set():
                return
            stop = asyncio.Event()
            worker = self._all[partition]
            task = asyncio.create_task(worker.run(stop), name=f"engine-{partition}")
            self._owned[partition] = (task, stop)
            log.info("engine partition taken", partition=partition)

    async def _drop(self, partition: int) -> None:
        task, stop = self._owned.pop(partition)
        stop.set()
        await asyncio.gather(task, return_exceptions=True)

    @property
    def processed(self) -> int:
        return sum(w.processed for w in self._all)

    @property
    def workers(self) -> list[PartitionWorker]:
        """The workers of the partitions run here (all of them without leases); a
        partition another process owns has no lag to report from this one."""
        if self._leases is None:
            return self._all
        running = set(self.owned())
        return [w for w in self._all if w.partition in running]

    def partitions_behind(self) -> int:
        """How many of the partitions run here hold telemetry not consumed yet."""
        return sum(1 for w in self.workers if w.cursor < w.log.last_offset(w.partition))
