"""Killing one NATS node of three (SIGKILL, the stream leader) while telemetry is appended
and the engine commits loses nothing that was acknowledged, and stores nothing twice.

Appends are retried until acknowledged, as an ingest client retries a request that got no
202; the engine runs its real loop (Engine.run), which retries a failed step from its
stored cursor. R3 streams, every node with ``sync_interval: always``.
"""

from __future__ import annotations

import asyncio
import time

from callstream.insights.engine import Engine
from callstream.store.interfaces import partition_of
from tests.natscluster import NatsCluster
from tests.stores.nats.conftest import eventually, run
from tests.stores.nats.test_nats_engine_store import PARTITIONS, Stores, open_stores
from tests.unit.test_engine_runtime import ACCOUNT, CountingLogic, call_sid, chunk, record

REQUESTS = 60
RECORDS_PER_REQUEST = 10


async def append_until_acknowledged(stores: Stores, request: int) -> None:
    batch = [
        record(request * RECORDS_PER_REQUEST + i, (request + i) % 16)
        for i in range(RECORDS_PER_REQUEST)
    ]
    deadline = time.monotonic() + 60
    while True:
        try:
            await stores.log.append(ACCOUNT, chunk(batch, PARTITIONS))
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def test_killing_a_node_loses_nothing_acknowledged(nats_cluster: NatsCluster) -> None:
    async def scenario() -> None:
        stores = await open_stores(nats_cluster)
        engine = Engine(stores.log, stores.store, CountingLogic())
        engine.start()
        info = await stores.nc.jetstream().stream_info("CS_TELEMETRY")
        assert info.cluster is not None
        leader = next(i for i, n in enumerate(nats_cluster.nodes) if n.name == info.cluster.leader)
        for request in range(REQUESTS):
            if request == REQUESTS // 3:
                killed = nats_cluster.kill(leader).name

                async def new_leader(killed: str = killed) -> bool:
                    try:
                        now = await stores.nc.jetstream().stream_info("CS_TELEMETRY")
                    except Exception:
                        return False
                    return now.cluster is not None and now.cluster.leader not in (None, killed)

            if request == 2 * REQUESTS // 3:
                await asyncio.to_thread(nats_cluster.restart, leader)
            await append_until_acknowledged(stores, request)
            if request == REQUESTS // 3:
                # The appends go on while the survivors elect a new leader.
                await eventually(new_leader, timeout=30, what="a new stream leader")
        acknowledged = REQUESTS * RECORDS_PER_REQUEST

        # Done when every record has its call event. (The engine's own counters cannot
        # tell: a step that failed after writing some calls replays those as duplicates.)
        async def every_event() -> bool:
            events = await stores.events.read(0, 100_000)
            return sum("call-event" in e.event.type for e in events) >= acknowledged

        await eventually(every_event, timeout=60, what="an event for every acknowledged record")
        await engine.stop()

        # Every record exactly once in the log...
        stored = await stores.log.read_all(0, 100_000)
        assert sum(e.records for e in stored) == acknowledged
        # ...and exactly one call event per record in the events log (one per call and seq).
        events = [e for e in await stores.events.read(0, 100_000) if "call-event" in e.event.type]
        assert len(events) == acknowledged
        assert len({(e.event.call_sid, e.event.identity) for e in events}) == acknowledged
        per_call = {call_sid(c): 0 for c in range(16)}
        for e in events:
            per_call[e.event.call_sid] += 1
        assert sum(per_call.values()) == acknowledged
        assert {partition_of(sid, PARTITIONS) for sid in per_call} == set(range(PARTITIONS))
        await stores.stop()

    run(scenario)
