"""The real engine (callstream.insights.engine.Engine) with the real call logic
(CallInsights) on simulated telemetry gives the same events on JetStream as on the
embedded SQLite backend: the same ids and the same bodies, in the same order.

Both backends are driven by the same clock and the same batches of telemetry: at each
tick the batch is appended, then every partition worker steps until it has nothing
left; after the last batch the clock jumps from due timer to due timer until none is left.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from callstream.insights.call import CallInsights
from callstream.insights.engine import Engine
from callstream.insights.step import EngineConfig
from callstream.model.telemetry import TelemetryRecord
from callstream.sim.generator import SimConfig, Simulation
from callstream.store.interfaces import EngineStore, EventLog, TelemetryLog
from callstream.store.signal import HighWater
from callstream.store.sqlite.database import Database
from callstream.store.sqlite.engine import SqliteEngineStore, SqliteEventLog
from callstream.store.sqlite.schema import migrate
from callstream.store.sqlite.telemetry import SqliteTelemetryLog
from tests.natscluster import NatsCluster
from tests.stores.nats.conftest import chunks, connect, eventually, run
from tests.stores.nats.test_nats_engine_store import Stores

ACCOUNT = "AC" + "a" * 32
PARTITIONS = 4
BATCH_SECONDS = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def batches() -> Iterator[tuple[float, list[TelemetryRecord]]]:
    simulation = Simulation(SimConfig(calls=6, concurrency=3, seed=5))
    start = simulation.config.start.timestamp()
    batch: list[TelemetryRecord] = []
    edge = BATCH_SECONDS
    for offset, record in simulation:
        if offset >= edge and batch:
            yield start + edge, batch
            batch = []
            edge = (offset // BATCH_SECONDS + 1) * BATCH_SECONDS
        batch.append(record)
    if batch:
        yield start + edge, batch


async def drive(
    log: TelemetryLog, store: EngineStore, events: EventLog, readable: Any
) -> list[tuple[str, str, str, str, bytes]]:
    clock = Clock()
    engine = Engine(
        log, store, CallInsights(EngineConfig(partial_after=10, complete_after=60)), clock
    )
    for worker in engine.workers:
        worker.cursor = await store.cursor(worker.partition)

    async def settle() -> None:
        for worker in engine.workers:
            await readable(worker.partition)
            while await worker.step():
                pass

    for now, batch in batches():
        clock.now = now
        await log.append(ACCOUNT, chunks(batch, PARTITIONS))
        await settle()
    while True:
        dues = [await store.next_due(p) for p in range(PARTITIONS)]
        pending = [d for d in dues if d is not None]
        if not pending:
            break
        clock.now = max(clock.now, min(pending))
        await settle()
    produced = await events.read(0, 1_000_000)
    return [
        (e.event.account_sid, e.event.call_sid, e.event.type, e.event.identity, e.event.body)
        for e in produced
    ]


def test_the_engine_produces_the_same_events_on_both_backends(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    async def on_sqlite() -> list[tuple[str, str, str, str, bytes]]:
        db = Database(tmp_path / "e.db")
        db.write_sync(migrate)
        signal = HighWater()
        log = SqliteTelemetryLog(db, PARTITIONS)

        async def readable(_: int) -> None:
            return None

        try:
            return await drive(
                log, SqliteEngineStore(db, signal), SqliteEventLog(db, signal), readable
            )
        finally:
            db.close()

    async def on_nats() -> list[tuple[str, str, str, str, bytes]]:
        stores = await Stores(await connect(nats_cluster)).start()

        async def readable(partition: int) -> None:
            # Direct gets may come from a replica a moment behind: wait until the
            # partition reads to its end, so both backends see the same batches.
            async def check() -> bool:
                last = stores.log.last_offset(partition)
                entries = await stores.log.read(partition, 0, 1_000_000)
                return last == 0 or (bool(entries) and entries[-1].offset == last)

            await eventually(check, what=f"partition {partition} readable")

        try:
            return await drive(stores.log, stores.store, stores.events, readable)
        finally:
            await stores.stop()

    expected = run(on_sqlite)
    got = run(on_nats)
    types = {t.rsplit(".", 1)[0] for _, _, t, _, _ in expected}
    assert len(expected) > 100
    assert len(types) >= 3  # events, metrics and summaries at least
    assert [e[:4] for e in got] == [e[:4] for e in expected]
    assert got == expected
