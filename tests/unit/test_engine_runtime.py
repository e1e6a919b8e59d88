"""The engine runtime on the embedded store: batches, timers, cursors, atomic commits.

The call logic here is a deliberately tiny one written for the test (one call event
per record, a "done" timer per call that emits one summary), so that what is
checked is the runtime: what it reads, fires, commits and replays.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from callstream.insights.engine import PartitionWorker
from callstream.insights.step import Step
from callstream.model.insights import CallEvent, CallSummary
from callstream.model.telemetry import GatewayEvent, TelemetryRecord
from callstream.store.interfaces import TelemetryChunk, partition_of
from callstream.store.signal import HighWater
from callstream.store.sqlite.database import Database
from callstream.store.sqlite.engine import SqliteEngineStore, SqliteEventLog
from callstream.store.sqlite.schema import migrate
from callstream.store.sqlite.telemetry import SqliteTelemetryLog

ACCOUNT = "AC" + "1" * 32
T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


class CountingState(msgspec.Struct):
    account_sid: str
    call_sid: str
    seen: int = 0
    fired: int = 0


class CountingLogic:
    """One call event per record; a 'done' timer 5 s after the first record."""

    def new_state(self, account_sid: str, call_sid: str) -> CountingState:
        return CountingState(account_sid, call_sid)

    def decode_state(self, raw: bytes) -> CountingState:
        return msgspec.msgpack.decode(raw, type=CountingState)

    def encode_state(self, state: Any) -> bytes:
        return msgspec.msgpack.encode(state)

    def apply(self, state: Any, records: Sequence[TelemetryRecord], now: float) -> Step:
        step = Step()
        for record in records:
            step.events.append(
                CallEvent(
                    account_sid=state.account_sid,
                    call_sid=state.call_sid,
                    time=record.timestamp,
                    seq=state.seen,
                    edge="carrier_edge",
                    group="connection",
                    name="ringing",
                )
            )
            if state.seen == 0:
                step.timers["done"] = now + 5
            state.seen += 1
        return step

    def fire(self, state: Any, kind: str, now: float) -> Step:
        state.fired += 1
        summary = CallSummary(
            account_sid=state.account_sid,
            call_sid=state.call_sid,
            time=datetime.fromtimestamp(now, UTC),
            kind="complete",
            processing_state="complete",
            processing_version=state.fired,
            call_type="carrier",
            call_state="completed",
        )
        return Step(events=[summary], timers={"done": None})


def call_sid(n: int) -> str:
    return f"CA{n:032x}"


def record(n: int, call: int) -> GatewayEvent:
    return GatewayEvent(
        id=f"r{n}", call_sid=call_sid(call), timestamp=T0, edge="carrier_edge", name="ringing"
    )


def chunk(records: list[GatewayEvent], partitions: int = 4) -> list[TelemetryChunk]:
    """The records as the ingest API stores them: one chunk per partition."""
    groups: dict[int, list[GatewayEvent]] = {}
    for r in records:
        groups.setdefault(partition_of(r.call_sid, partitions), []).append(r)
    return [TelemetryChunk(p, len(g), msgspec.msgpack.encode(g)) for p, g in groups.items()]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def stores(
    tmp_path: Path,
) -> Iterator[tuple[Database, SqliteTelemetryLog, SqliteEngineStore, SqliteEventLog]]:
    db = Database(tmp_path / "e.db")
    db.write_sync(migrate)
    signal = HighWater()
    yield db, SqliteTelemetryLog(db, 4), SqliteEngineStore(db, signal), SqliteEventLog(db, signal)
    db.close()


def test_records_become_events_and_timers_fire_once(stores: Any) -> None:
    _, log, store, events = stores
    clock = Clock()

    async def scenario() -> None:
        calls = [c for c in range(40) if partition_of(call_sid(c), 4) == 0][:3]
        await log.append(ACCOUNT, chunk([record(i, calls[i % 3]) for i in range(9)]))
        worker = PartitionWorker(0, log, store, CountingLogic(), clock)
        worker.cursor = await store.cursor(0)
        assert await worker.step()
        assert not await worker.step()  # nothing new, no timer due yet
        produced = await events.read(0, 100)
        assert len(produced) == 9
        assert all(e.event.type.endswith("call-event.gateway") for e in produced)
        assert await store.pending_timers() == 3
        clock.now += 5
        assert await worker.step()
        summaries = [e for e in await events.read(0, 100) if "summary" in e.event.type]
        assert sorted(e.event.call_sid for e in summaries) == sorted(call_sid(c) for c in calls)
        assert await store.pending_timers() == 0
        assert not await worker.step()

    asyncio.run(scenario())


def test_a_restarted_worker_resumes_from_its_committed_cursor(stores: Any) -> None:
    _, log, store, events = stores

    async def scenario() -> None:
        calls = [c for c in range(40) if partition_of(call_sid(c), 4) == 1][:2]
        await log.append(ACCOUNT, chunk([record(i, calls[i % 2]) for i in range(6)]))
        first = PartitionWorker(1, log, store, CountingLogic(), Clock())
        first.cursor = await store.cursor(1)
        await first.step()
        await log.append(ACCOUNT, chunk([record(i, calls[i % 2]) for i in range(6, 10)]))
        second = PartitionWorker(1, log, store, CountingLogic(), Clock())
        second.cursor = await store.cursor(1)
        assert second.cursor == first.cursor
        await second.step()
        produced = await events.read(0, 100)
        assert len(produced) == 10
        # Each call's counter continued from its stored state: seq values are unique per call.
        seqs = {(e.event.call_sid, e.event.identity) for e in produced}
        assert len(seqs) == 10

    asyncio.run(scenario())


def test_a_record_sent_twice_is_applied_once(stores: Any) -> None:
    _, log, store, events = stores

    async def scenario() -> None:
        call = next(c for c in range(40) if partition_of(call_sid(c), 4) == 0)
        batch = [record(i, call) for i in range(4)]
        await log.append(ACCOUNT, chunk(batch))
        worker = PartitionWorker(0, log, store, CountingLogic(), Clock(), cache_calls=0)
        await worker.step()
        # The same records again, in a later request, after the call left the cache.
        await log.append(ACCOUNT, chunk([*batch[2:], record(9, call)]))
        await worker.step()
        produced = await events.read(0, 100)
        assert len(produced) == 5
        assert worker.duplicates == 2

    asyncio.run(scenario())


def test_a_failing_commit_leaves_nothing_behind(stores: Any) -> None:
    _, log, store, events = stores

    class Exploding(CountingLogic):
        explode = True

        def apply(self, state: Any, records: Sequence[TelemetryRecord], now: float) -> Step:
            step = super().apply(state, records, now)
            if self.explode and state.seen > 2:
                raise RuntimeError("boom")
            return step

    async def scenario() -> None:
        call = next(c for c in range(40) if partition_of(call_sid(c), 4) == 2)
        await log.append(ACCOUNT, chunk([record(i, call) for i in range(5)]))
        logic = Exploding()
        worker = PartitionWorker(2, log, store, logic, Clock())
        with pytest.raises(RuntimeError):
            await worker.step()
        assert await events.read(0, 100) == []
        assert await store.cursor(2) == 0
        assert await store.pending_timers() == 0
        # Retried, the step starts from the stored truth, not from the state the
        # failed attempt had already changed in memory.
        logic.explode = False
        await worker.step()
        seqs = sorted(e.event.identity for e in await events.read(0, 100))
        assert seqs == [f"event/carrier_edge/{i}" for i in range(5)]

    asyncio.run(scenario())


def test_waiting_readers_wake_when_telemetry_arrives(stores: Any) -> None:
    _, log, _, _ = stores

    async def scenario() -> None:
        call = next(c for c in range(40) if partition_of(call_sid(c), 4) == 3)
        waiter = asyncio.create_task(log.wait(3, 0, timeout=30))
        await asyncio.sleep(0)  # let the waiter start waiting before the append
        await log.append(ACCOUNT, chunk([record(1, call)]))
        await asyncio.wait_for(waiter, timeout=5)

    asyncio.run(scenario())
