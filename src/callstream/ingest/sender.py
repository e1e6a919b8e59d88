"""Posting a stream of simulated arrivals through the ingest API.

Records are sent in batches, several requests at a time. In real time each
record waits for its (compressed) arrival offset, so the server sees traffic as
a live platform would send it; otherwise everything goes as fast as the server
takes it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from callstream.ingest.client import IngestClient
from callstream.model.telemetry import TelemetryRecord

Arrival = tuple[float, TelemetryRecord]


async def send_arrivals(
    arrivals: Iterable[Arrival],
    client: IngestClient,
    *,
    realtime: bool,
    batch_size: int = 500,
    concurrency: int = 4,
    linger: float = 0.05,
    on_sent: Callable[[int], None] | None = None,
    stopping: asyncio.Event | None = None,
) -> int:
    """Send every arrival; return how many records were sent."""
    in_flight: set[asyncio.Task[None]] = set()
    slots = asyncio.Semaphore(concurrency)
    sent = 0
    began = time.monotonic()
    batch: list[TelemetryRecord] = []
    batch_due = 0.0

    async def post(records: list[TelemetryRecord]) -> None:
        try:
            await client.send(records)
            if on_sent is not None:
                on_sent(len(records))
        finally:
            slots.release()

    async def flush() -> None:
        nonlocal batch, sent
        if not batch:
            return
        await slots.acquire()
        task = asyncio.create_task(post(batch))
        in_flight.add(task)
        sent += len(batch)
        batch = []

    try:
        for offset, record in arrivals:
            if stopping is not None and stopping.is_set():
                break
            if realtime:
                wait = offset - (time.monotonic() - began)
                # Hold a partial batch for at most `linger` so real-time traffic stays timely.
                if batch and (wait > linger or time.monotonic() - batch_due > linger):
                    await flush()
                if wait > 0:
                    await asyncio.sleep(wait)
            if not batch:
                batch_due = time.monotonic()
            batch.append(record)
            if len(batch) >= batch_size:
                await flush()
            # Surface a failed request now rather than after the whole run.
            for task in [t for t in in_flight if t.done()]:
                in_flight.discard(task)
                task.result()
        await flush()
        if in_flight:
            await asyncio.gather(*in_flight)
        return sent
    finally:
        # Cancelled or failed part-way: end the requests still in flight here, so none of
        # them outlives the client it posts with.
        for task in in_flight:
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)
