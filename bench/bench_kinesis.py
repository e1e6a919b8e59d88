"""Kinesis sink throughput: events/s the Kinesis driver writes to a stream on moto.

Figures, each beside its ceiling measured in the same run against the same moto server:
- driver: N events sent through ``KinesisDriver.send`` in requests of 500 events (the size of
  one PutRecords call), one request at a time (see CONCURRENCY), AssumeRole and partition
  keys included; then read back to check every record is there;
- driver_single: the same with one event per request (what the worker does for a sink it
  does not batch), to show what batching is worth;
- ceiling: bare aiobotocore PutRecords of the same records with static credentials, same
  batches and concurrency: what moto itself takes.

moto is a Python emulator, so absolute figures say more about moto than about Kinesis; the
ratio driver / ceiling is the driver's own cost. ``BENCH_KINESIS_EVENTS`` sets N (default
20,000) for a smoke run.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from aiobotocore.session import get_session
from tests.integration.moto_server import ACCOUNT, REGION, MotoServer, read_stream

from callstream.sinks.kinesis import KinesisDriver, partition_key
from callstream.store.control import Sink

EVENTS = int(os.environ.get("BENCH_KINESIS_EVENTS", "20000"))
BATCH = 500
# One request at a time: moto numbers a shard's records without a lock, so concurrent
# PutRecords calls to one shard overwrite each other's records there (not so on AWS).
CONCURRENCY = 1
CALLS = 200


def _events(count: int) -> list[bytes]:
    """CloudEvents of about the size of a gateway call-metrics event (~0.9 KB)."""
    out = []
    for n in range(count):
        call_sid = f"CA{n % CALLS:032x}"
        envelope = {
            "specversion": "1.0",
            "type": "com.twilio.voice.insights.call-metrics.gateway",
            "source": f"/v1/Voice/{call_sid}/Metrics",
            "id": f"EZ{n:032x}",
            "dataschema": "https://events-schemas.twilio.com/VoiceInsights.CallMetric/1",
            "datacontenttype": "application/json",
            "time": "2026-11-22T05:00:00.000Z",
            "data": {
                "call_sid": call_sid,
                "account_sid": "AC" + "be" * 16,
                "edge": "carrier_edge",
                "direction": "both",
                "timestamp": "2026-11-22T05:00:00.000Z",
                "carrier_edge": {
                    "metadata": {"region": "us1", "edge_location": "ashburn"},
                    "codec": 0,
                    "codec_name": "pcmu",
                    "packets_received": 500 + n % 7,
                    "packets_sent": 500,
                    "packets_lost": n % 3,
                    "packets_loss_percentage": 0.2,
                    "jitter": {"avg": 1.5, "max": 4.2},
                    "rtt": {"avg": 32.0, "max": 41.0},
                    "mos": 4.31,
                },
            },
        }
        out.append(json.dumps(envelope, separators=(",", ":")).encode())
    return out


async def _concurrently(jobs: Sequence[Callable[[], Awaitable[bool]]]) -> float:
    """Seconds to run ``jobs`` with at most CONCURRENCY at a time; each must return True."""
    queue = list(reversed(jobs))

    async def worker() -> None:
        while queue:
            job = queue.pop()
            if not await job():
                raise RuntimeError("a request was not delivered")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return time.perf_counter() - started


def _sink(arn: str) -> Sink:
    return Sink(
        sid="DG" + "be" * 16,
        account_sid="AC" + "be" * 16,
        description="bench",
        sink_type="kinesis",
        configuration={
            "arn": arn,
            "role_arn": f"arn:aws:iam::{ACCOUNT}:role/bench",
            "external_id": "bench-external-id",
        },
        status="active",
        date_created=0.0,
        date_updated=0.0,
    )


async def _driver(arn: str, events: list[bytes], per: int) -> float:
    kinesis = KinesisDriver()
    sink = _sink(arn)

    def job(chunk: list[bytes]) -> Callable[[], Awaitable[bool]]:
        async def run() -> bool:
            return (await kinesis.send(sink, "", chunk)).ok

        return run

    try:
        await kinesis.send(sink, "", events[:1])  # assume the role outside the timing
        return await _concurrently([job(events[i : i + per]) for i in range(1, len(events), per)])
    finally:
        await kinesis.close()


async def _ceiling(url: str, arn: str, events: list[bytes]) -> float:
    async with get_session().create_client(
        "kinesis",
        region_name=REGION,
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ) as client:

        def job(chunk: list[bytes]) -> Callable[[], Awaitable[bool]]:
            records = [{"Data": e, "PartitionKey": partition_key(e)} for e in chunk]

            async def run() -> bool:
                response = await client.put_records(StreamARN=arn, Records=records)  # type: ignore[arg-type]
                return response["FailedRecordCount"] == 0

            return run

        return await _concurrently(
            [job(events[i : i + BATCH]) for i in range(0, len(events), BATCH)]
        )


def main() -> dict[str, float]:
    events = _events(EVENTS)
    single = events[: max(1, EVENTS // 10)]  # one per request is slow: a tenth is enough
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        moto = MotoServer(Path(tmp)).start()
        saved = dict(os.environ)
        os.environ.update(moto.aws_env())
        try:
            arn = moto.create_stream(shards=4)
            asyncio.run(_ceiling(moto.url, arn, events[:BATCH]))  # warm moto up, untimed
            arn = moto.create_stream(shards=4)
            ceiling_s = asyncio.run(_ceiling(moto.url, arn, events))
            arn = moto.create_stream(shards=4)
            driver_s = asyncio.run(_driver(arn, events, BATCH))
            stored = len(read_stream(moto, arn))
            if stored != len(events):
                raise RuntimeError(f"{stored} records in the stream, {len(events)} sent")
            arn = moto.create_stream(shards=4)
            single_s = asyncio.run(_driver(arn, single, 1))
        finally:
            os.environ.clear()
            os.environ.update(saved)
            moto.stop()
    figures["kinesis_driver_events_per_s"] = (len(events) - 1) / driver_s
    figures["kinesis_ceiling_events_per_s"] = len(events) / ceiling_s
    figures["kinesis_driver_single_events_per_s"] = (len(single) - 1) / single_s
    ratio = figures["kinesis_driver_events_per_s"] / figures["kinesis_ceiling_events_per_s"]
    print(
        f"kinesis  {figures['kinesis_driver_events_per_s']:>10,.0f} events/s "
        f"({BATCH}/request)   ceiling {figures['kinesis_ceiling_events_per_s']:>10,.0f} "
        f"(bare PutRecords on moto)   ratio {ratio:.2f}   "
        f"1/request {figures['kinesis_driver_single_events_per_s']:,.0f} events/s   "
        f"({len(events):,} events)"
    )
    return figures


if __name__ == "__main__":
    main()
