"""The telemetry log on a real 3-node JetStream cluster (R3, sync_interval always)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import msgspec

from callstream.model.telemetry import GatewayEvent, TelemetryRecord
from callstream.store.interfaces import partition_of
from callstream.store.nats.telemetry import NatsTelemetryLog
from tests.natscluster import NatsCluster
from tests.stores.nats.conftest import REPLICAS, chunks, connect, eventually, run

ACCOUNT = "AC" + "1" * 32
T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
PARTITIONS = 4


def record(n: int, call: int) -> GatewayEvent:
    return GatewayEvent(
        id=f"r{n}", call_sid=f"CA{call:032x}", timestamp=T0, edge="carrier_edge", name="ringing"
    )


def decoded(body: bytes) -> list[str]:
    return [r.id for r in msgspec.msgpack.decode(body, type=list[TelemetryRecord])]


def test_appended_chunks_are_read_back_per_partition_in_order(nats_cluster: NatsCluster) -> None:
    async def scenario() -> None:
        nc = await connect(nats_cluster)
        log = NatsTelemetryLog(nc, PARTITIONS, REPLICAS)
        await log.start()
        for request in range(5):
            batch = [record(request * 10 + i, i) for i in range(10)]
            await log.append(ACCOUNT, chunks(batch, PARTITIONS))
        for partition in range(PARTITIONS):
            expected = [
                f"r{r * 10 + i}"
                for r in range(5)
                for i in range(10)
                if partition_of(f"CA{i:032x}", PARTITIONS) == partition
            ]

            async def complete(p: int = partition, want: int = len(expected)) -> bool:
                return sum(e.records for e in await log.read(p, 0, 10_000)) == want

            await eventually(complete, what="a replica holding every chunk")
            entries = await log.read(partition, 0, 10_000)
            assert [rid for e in entries for rid in decoded(e.body)] == expected
            assert all(e.account_sid == ACCOUNT for e in entries)
            offsets = [e.offset for e in entries]
            assert offsets == sorted(set(offsets))
            assert log.last_offset(partition) == offsets[-1]
            # Reading after an offset returns exactly the later chunks.
            later = await log.read(partition, offsets[1], 10_000)
            assert [e.offset for e in later] == offsets[2:]
        everything = await log.read_all(0, 1000)
        assert sum(e.records for e in everything) == 50
        await log.stop()
        await nc.close()

    run(scenario)


def test_a_retried_append_stores_nothing_twice(nats_cluster: NatsCluster) -> None:
    async def scenario() -> None:
        nc = await connect(nats_cluster)
        log = NatsTelemetryLog(nc, PARTITIONS, REPLICAS)
        await log.start()
        batch = chunks([record(i, i) for i in range(12)], PARTITIONS)
        await log.append(ACCOUNT, batch)
        # The client got no 202 for part of a request and sent all of it again.
        await log.append(ACCOUNT, batch[1:])
        await log.append(ACCOUNT, batch)
        info = await nc.jetstream().stream_info("CS_TELEMETRY")
        assert info.state.messages == len(batch)
        # Another account sending the same bytes is a different request.
        await log.append("AC" + "2" * 32, batch[:1])
        info = await nc.jetstream().stream_info("CS_TELEMETRY")
        assert info.state.messages == len(batch) + 1
        await nc.close()

    run(scenario)


def test_a_waiting_reader_wakes_when_another_process_appends(nats_cluster: NatsCluster) -> None:
    async def scenario() -> None:
        reader_nc = await connect(nats_cluster)
        writer_nc = await connect(nats_cluster)
        reader = NatsTelemetryLog(reader_nc, PARTITIONS, REPLICAS)
        writer = NatsTelemetryLog(writer_nc, PARTITIONS, REPLICAS)
        await reader.start()
        await writer.start()
        call = next(c for c in range(40) if partition_of(f"CA{c:032x}", PARTITIONS) == 3)
        waiter = asyncio.create_task(reader.wait(3, 0, timeout=30))
        await asyncio.sleep(0)  # let the waiter start waiting before the append
        await writer.append(ACCOUNT, chunks([record(1, call)], PARTITIONS))
        await asyncio.wait_for(waiter, timeout=5)
        assert reader.last_offset(3) > 0
        # Nothing new past the last offset: the wait ends by its timeout.
        started = asyncio.get_running_loop().time()
        await reader.wait(3, reader.last_offset(3), timeout=0.3)
        assert asyncio.get_running_loop().time() - started >= 0.25
        # A new reader learns what was stored before it started.
        late = NatsTelemetryLog(reader_nc, PARTITIONS, REPLICAS)
        await late.start()
        assert late.last_offset(3) == reader.last_offset(3)
        for log in (reader, writer, late):
            await log.stop()
        await reader_nc.close()
        await writer_nc.close()

    run(scenario)
