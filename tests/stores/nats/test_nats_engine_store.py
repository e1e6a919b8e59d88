"""The engine runtime on the JetStream engine store: the behaviour the embedded store has
(tests/unit/test_engine_runtime.py), plus what a store without transactions must add:
replayed commits and crashes between a commit's writes end in the same events and states,
and a worker whose cursor was moved by another is fenced off.

The call logic is the tiny counting one of the runtime tests (one call event per record, a
"done" timer per call that emits one summary), so what is checked is the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from nats.aio.client import Client

from callstream.insights.engine import PartitionWorker
from callstream.insights.step import Step
from callstream.model.telemetry import TelemetryRecord
from callstream.store.interfaces import CallKey, PartitionCommit, StoredCall, partition_of
from callstream.store.nats import engine as nats_engine
from callstream.store.nats.engine import CursorMoved, NatsEngineStore
from callstream.store.nats.events import NatsEventLog
from callstream.store.nats.telemetry import NatsTelemetryLog
from tests.natscluster import NatsCluster
from tests.stores.nats.conftest import REPLICAS, connect, eventually, run
from tests.unit.test_engine_runtime import ACCOUNT, Clock, CountingLogic, call_sid, chunk, record

PARTITIONS = 4


class Stores:
    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.log = NatsTelemetryLog(nc, PARTITIONS, REPLICAS)
        self.store = NatsEngineStore(nc, REPLICAS)
        self.events = NatsEventLog(nc, REPLICAS)

    async def start(self) -> Stores:
        await self.log.start()
        await self.store.start()
        await self.events.start()
        return self

    async def stop(self) -> None:
        await self.log.stop()
        await self.events.stop()
        await self.nc.close()


async def open_stores(cluster: NatsCluster) -> Stores:
    return await Stores(await connect(cluster)).start()


async def caught_up(stores: Stores, partition: int) -> None:
    """Wait until a read of the partition returns everything appended (direct gets may be
    answered by a replica a moment behind the leader)."""

    async def check() -> bool:
        entries = await stores.log.read(partition, 0, 100_000)
        last = stores.log.last_offset(partition)
        return (bool(entries) and entries[-1].offset == last) or last == 0

    await eventually(check, what=f"partition {partition} readable to its end")


async def all_events(stores: Stores, want: int | None = None) -> list[Any]:
    if want is not None:

        async def enough() -> bool:
            return len(await stores.events.read(0, 100_000)) >= want

        await eventually(enough, what=f"{want} events readable")
    return list(await stores.events.read(0, 100_000))


def calls_in(partition: int, n: int) -> list[int]:
    return [c for c in range(80) if partition_of(call_sid(c), PARTITIONS) == partition][:n]


def test_records_become_events_and_timers_fire_once(nats_cluster: NatsCluster) -> None:
    clock = Clock()

    async def scenario() -> None:
        stores = await open_stores(nats_cluster)
        calls = calls_in(0, 3)
        await stores.log.append(ACCOUNT, chunk([record(i, calls[i % 3]) for i in range(9)]))
        await caught_up(stores, 0)
        worker = PartitionWorker(0, stores.log, stores.store, CountingLogic(), clock)
        worker.cursor = await stores.store.cursor(0)
        assert await worker.step()
        assert not await worker.step()  # nothing new, no timer due yet
        produced = await all_events(stores, 9)
        assert len(produced) == 9
        assert all(e.event.type.endswith("call-event.gateway") for e in produced)
        assert await stores.store.pending_timers() == 3
        assert await stores.store.next_due(0) == clock.now + 5
        clock.now += 5
        assert await worker.step()
        summaries = [e for e in await all_events(stores, 12) if "summary" in e.event.type]
        assert sorted(e.event.call_sid for e in summaries) == sorted(call_sid(c) for c in calls)
        assert await stores.store.pending_timers() == 0
        assert not await worker.step()
        await stores.stop()

    run(scenario)


def test_a_restarted_worker_resumes_from_its_committed_cursor(nats_cluster: NatsCluster) -> None:
    async def scenario() -> None:
        stores = await open_stores(nats_cluster)
        calls = calls_in(1, 2)
        await stores.log.append(ACCOUNT, chunk([record(i, calls[i % 2]) for i in range(6)]))
        await caught_up(stores, 1)
        first = PartitionWorker(1, stores.log, stores.store, CountingLogic(), Clock())
        first.cursor = await stores.store.cursor(1)
        await first.step()
        await stores.stop()
        # A new process: new connection, new store objects.
        stores = await open_stores(nats_cluster)
        await stores.log.append(ACCOUNT, chunk([record(i, calls[i % 2]) for i in range(6, 10)]))
        await caught_up(stores, 1)
        second = PartitionWorker(1, stores.log, stores.store, CountingLogic(), Clock())
        second.cursor = await stores.store.cursor(1)
        assert second.cursor == first.cursor
        await second.step()
        produced = await all_events(stores, 10)
        assert len(produced) == 10
        # Each call's counter continued from its stored state: identities unique per call.
        assert len({(e.event.call_sid, e.event.identity) for e in produced}) == 10
        assert await stores.store.pending_timers() == 2
        await stores.stop()

    run(scenario)


def test_a_record_sent_twice_is_applied_once(nats_cluster: NatsCluster) -> None:
    async def scenario() -> None:
        stores = await open_stores(nats_cluster)
        call = calls_in(0, 1)[0]
        batch = [record(i, call) for i in range(4)]
        await stores.log.append(ACCOUNT, chunk(batch))
        await caught_up(stores, 0)
        worker = PartitionWorker(0, stores.log, stores.store, CountingLogic(), Clock(), 0)
        await worker.step()
        # The same records again, in a later request, after the call left the cache.
        await stores.log.append(ACCOUNT, chunk([*batch[2:], record(9, call)]))
        await caught_up(stores, 0)
        await worker.step()
        assert len(await all_events(stores, 5)) == 5
        assert worker.duplicates == 2
        await stores.stop()

    run(scenario)


def test_a_failing_step_leaves_nothing_behind(nats_cluster: NatsCluster) -> None:
    class Exploding(CountingLogic):
        explode = True

        def apply(self, state: Any, records: Sequence[TelemetryRecord], now: float) -> Step:
            step = super().apply(state, records, now)
            if self.explode and state.seen > 2:
                raise RuntimeError("boom")
            return step

    async def scenario() -> None:
        stores = await open_stores(nats_cluster)
        call = calls_in(2, 1)[0]
        await stores.log.append(ACCOUNT, chunk([record(i, call) for i in range(5)]))
        await caught_up(stores, 2)
        logic = Exploding()
        worker = PartitionWorker(2, stores.log, stores.store, logic, Clock())
        with pytest.raises(RuntimeError):
            await worker.step()
        assert await stores.events.read(0, 100) == []
        assert await stores.store.cursor(2) == 0
        assert await stores.store.pending_timers() == 0
        logic.explode = False
        await worker.step()
        identities = sorted(e.event.identity for e in await all_events(stores, 5))
        assert identities == [f"event/carrier_edge/{i}" for i in range(5)]
        await stores.stop()

    run(scenario)


def test_a_replayed_commit_stores_nothing_twice(nats_cluster: NatsCluster) -> None:
    async def scenario() -> None:
        stores = await open_stores(nats_cluster)
        call = calls_in(3, 1)[0]
        await stores.log.append(ACCOUNT, chunk([record(i, call) for i in range(3)]))
        await caught_up(stores, 3)
        clock = Clock()
        worker = PartitionWorker(3, stores.log, stores.store, CountingLogic(), clock)
        entries = await stores.log.read(3, 0, 100)
        commit = await worker._run(entries, [], clock.now)
        await stores.store.commit(commit)
        await stores.store.commit(commit)  # the same step, committed again
        # And once more by a restarted worker on a new connection.
        again = await open_stores(nats_cluster)
        await again.store.cursor(3)
        await again.store.commit(commit)
        produced = await all_events(stores, 3)
        await asyncio.sleep(0)
        assert len(produced) == 3
        info = await stores.nc.jetstream().stream_info("CS_EVENTS")
        assert info.state.messages == 3
        assert await stores.store.pending_timers() == 1
        assert await again.store.cursor(3) == entries[-1].offset
        await again.stop()
        await stores.stop()

    run(scenario)


class SimulatedCrash(Exception):
    """Stand-in for a process dying between two writes of a commit: no real part can stop a
    process at an exact line, so the store's write functions are wrapped to raise there."""


def crash_at(point: str, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Make the next commit stop at ``point``; returns a function that disarms it."""
    armed = {"on": True}
    real_events = nats_engine.publish_events
    real_publish = nats_engine.publish_all
    writes = {"count": 0}

    async def events(js: Any, batch: Any) -> None:
        if armed["on"] and point == "before-events":
            raise SimulatedCrash(point)
        await real_events(js, batch)
        if armed["on"] and point == "after-events":
            raise SimulatedCrash(point)

    async def publish(js: Any, messages: Any, *args: Any) -> Any:
        writes["count"] += 1
        if armed["on"] and point == "half-of-the-calls" and writes["count"] == 1:
            await real_publish(js, messages[: len(messages) // 2])
            raise SimulatedCrash(point)
        result = await real_publish(js, messages, *args)
        if armed["on"] and point == "after-calls" and writes["count"] == 1:
            raise SimulatedCrash(point)
        if armed["on"] and point == "after-hints" and writes["count"] == 2:
            raise SimulatedCrash(point)
        return result

    monkeypatch.setattr(nats_engine, "publish_events", events)
    monkeypatch.setattr(nats_engine, "publish_all", publish)

    def disarm() -> None:
        armed["on"] = False

    return disarm


async def _drive(
    cluster: NatsCluster,
    crash_in_step: int | None,
    arm: Callable[[], Callable[[], None]] | None,
) -> tuple[list[tuple[str, str, str, bytes]], dict[CallKey, StoredCall], int]:
    """Two steps on partition 0 (records, then the timers they set); optionally crash in one
    of them and replay it from the stored cursor in a 'restarted process'."""
    stores = await open_stores(cluster)
    clock = Clock()
    calls = calls_in(0, 4)
    keys = [(ACCOUNT, call_sid(c)) for c in calls]
    await stores.log.append(ACCOUNT, chunk([record(i, calls[i % 4]) for i in range(12)]))
    await caught_up(stores, 0)
    for step in (1, 2):
        if step == 2:
            clock.now += 5
        worker = PartitionWorker(0, stores.log, stores.store, CountingLogic(), clock)
        worker.cursor = await stores.store.cursor(0)
        if crash_in_step == step and arm is not None:
            disarm = arm()
            with pytest.raises(SimulatedCrash):
                await worker.step()
            disarm()
            await stores.stop()
            stores = await open_stores(cluster)  # the restarted process
            worker = PartitionWorker(0, stores.log, stores.store, CountingLogic(), clock)
            worker.cursor = await stores.store.cursor(0)
        while await worker.step():
            pass
    produced = await all_events(stores, 16)
    events = sorted(
        (e.event.call_sid, e.event.type, e.event.identity, e.event.body) for e in produced
    )
    states = await stores.store.load_calls(0, keys)
    pending = await stores.store.pending_timers()
    await stores.stop()
    return events, states, pending


CRASH_POINTS = ["before-events", "after-events", "half-of-the-calls", "after-calls", "after-hints"]


@pytest.mark.parametrize("step", [1, 2])
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_crash_between_commit_writes_replays_to_the_same_result(
    nats_cluster: NatsCluster, monkeypatch: pytest.MonkeyPatch, point: str, step: int
) -> None:
    reference = run(lambda: _drive(nats_cluster, None, None))
    assert len(reference[0]) == 16  # 12 call events + 4 summaries
    assert reference[2] == 0
    from tests.stores.nats.conftest import _reset

    asyncio.run(_reset(nats_cluster))
    crashed = run(lambda: _drive(nats_cluster, step, lambda: crash_at(point, monkeypatch)))
    assert crashed[0] == reference[0]
    assert crashed[1] == reference[1]
    assert crashed[2] == reference[2]


def test_a_worker_whose_cursor_was_moved_is_fenced_off(nats_cluster: NatsCluster) -> None:
    async def scenario() -> None:
        old = await open_stores(nats_cluster)
        new = await open_stores(nats_cluster)
        assert await old.store.cursor(1) == 0
        # The partition moved to another worker, which committed.
        assert await new.store.cursor(1) == 0
        await new.store.commit(PartitionCommit(partition=1, cursor=7))
        with pytest.raises(CursorMoved):
            await old.store.commit(PartitionCommit(partition=1, cursor=3))
        # And it stays fenced off, even for a commit that would not move the cursor,
        # until it reads the cursor again (a new epoch on the partition).
        with pytest.raises(CursorMoved):
            await old.store.commit(PartitionCommit(partition=1, cursor=None))
        assert await new.store.cursor(1) == 7
        assert await old.store.cursor(1) == 7
        await old.store.commit(PartitionCommit(partition=1, cursor=9))
        assert await new.store.cursor(1) == 9
        await old.stop()
        await new.stop()

    run(scenario)


def test_events_are_read_by_account_in_order_and_wake_waiters(nats_cluster: NatsCluster) -> None:
    async def scenario() -> None:
        stores = await open_stores(nats_cluster)
        other = "AC" + "9" * 32
        waiter = asyncio.create_task(stores.events.wait(0, timeout=30))
        await asyncio.sleep(0)
        calls = calls_in(0, 2)
        mine = chunk([record(i, calls[0]) for i in range(3)])
        theirs = chunk([record(i, calls[1]) for i in range(10, 12)])
        await stores.log.append(ACCOUNT, mine)
        await stores.log.append(other, theirs)
        await caught_up(stores, 0)
        worker = PartitionWorker(0, stores.log, stores.store, CountingLogic(), Clock())
        await worker.step()
        await asyncio.wait_for(waiter, timeout=5)
        everything = await all_events(stores, 5)
        assert [e.offset for e in everything] == sorted(e.offset for e in everything)
        assert await stores.events.last_offset() == everything[-1].offset
        by_account = await stores.events.read(0, 100, account_sid=other)
        assert [e.event.account_sid for e in by_account] == [other, other]
        assert [e.event.identity for e in by_account] == [
            "event/carrier_edge/0",
            "event/carrier_edge/1",
        ]
        await stores.stop()

    run(scenario)


def test_a_cursor_write_whose_ack_was_lost_does_not_fence_its_writer(
    nats_cluster: NatsCluster,
) -> None:
    """Stand-in for a lost ack (the server stored the cursor, the answer never came back):
    the bucket's update is wrapped to raise after it succeeded. The writer must not take
    its own write for another worker's on the next commit."""

    async def scenario() -> None:
        stores = await open_stores(nats_cluster)
        store = stores.store
        assert await store.cursor(0) == 0
        bucket = store._buckets["CS_CURSORS"]
        real_update = bucket.update

        async def update_then_lose_ack(*args: Any, **kwargs: Any) -> int:
            await real_update(*args, **kwargs)
            raise TimeoutError("stand-in: ack lost")

        bucket.update = update_then_lose_ack  # type: ignore[method-assign]
        with pytest.raises(TimeoutError):
            await store.commit(PartitionCommit(partition=0, cursor=5))
        bucket.update = real_update  # type: ignore[method-assign]
        await store.commit(PartitionCommit(partition=0, cursor=8))
        assert await store.cursor(0) == 8
        # Whereas a cursor written by another store instance meanwhile does fence it.
        bucket.update = update_then_lose_ack  # type: ignore[method-assign]
        with pytest.raises(TimeoutError):
            await store.commit(PartitionCommit(partition=0, cursor=9))
        bucket.update = real_update  # type: ignore[method-assign]
        other = await open_stores(nats_cluster)
        await other.store.cursor(0)
        await other.store.commit(PartitionCommit(partition=0, cursor=12))
        with pytest.raises(CursorMoved):
            await store.commit(PartitionCommit(partition=0, cursor=10))
        assert await other.store.cursor(0) == 12
        await other.stop()
        await stores.stop()

    run(scenario)
