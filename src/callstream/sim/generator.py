"""The simulation: every call's deliveries merged into one stream in arrival order.

Two heaps drive it. One holds each call in progress, keyed by when its next delivery is sent;
the other holds deliveries in flight, keyed by when they arrive. A delivery in flight is
released once no call in progress, and no call yet to start, can send anything earlier, which
holds because nothing arrives before it is sent. Calls are started, and their telemetry
generated, only when the merge reaches them, so memory follows the number of calls in
progress and the deliveries in flight, never the number of calls simulated.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import count
from typing import BinaryIO, Final

import msgspec

from callstream.model.telemetry import TelemetryRecord
from callstream.sim.calls import SDK_LEAD_MAX, CallPlan, TrafficMix, plan_calls
from callstream.sim.delivery import DEFAULT_DELIVERY, DeliveryModel
from callstream.sim.stream import Delivery, call_stream

__all__ = [
    "DEFAULT_START",
    "Arrival",
    "SimConfig",
    "SimStats",
    "Simulation",
    "generate",
    "write_ndjson",
]

DEFAULT_START: Final = datetime(2025, 1, 1, tzinfo=UTC)
"""A fixed default, so the same seed and parameters give byte-identical output."""

Arrival = tuple[float, TelemetryRecord]
"""(arrival offset in seconds from the start of the simulation, divided by ``compress``;
the record), yielded in arrival order."""


@dataclass(frozen=True, slots=True)
class SimConfig:
    calls: int = 100
    concurrency: float = 10.0
    """About this many calls are in progress at once (after the first calls' ramp-up)."""
    seed: int = 0
    compress: float = 1.0
    """Arrival offsets are divided by this; record timestamps keep real durations."""
    start: datetime = DEFAULT_START
    """Wall-clock time of simulation second 0: record timestamps are ``start`` + offset."""
    mix: TrafficMix = field(default_factory=TrafficMix)
    delivery: DeliveryModel = DEFAULT_DELIVERY

    def __post_init__(self) -> None:
        if self.calls < 0:
            raise ValueError("calls must be >= 0")
        if not self.concurrency > 0:
            raise ValueError("concurrency must be > 0")
        if not (self.compress > 0 and math.isfinite(self.compress)):
            raise ValueError("compress must be a positive number")
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware")


@dataclass(slots=True)
class SimStats:
    """Counts of one run, updated as the simulation is iterated."""

    calls_started: int = 0
    calls_done: int = 0
    """Calls whose telemetry has been fully generated (some may still be in flight)."""
    deliveries: int = 0
    records_delivered: int = 0
    records_dropped: int = 0
    call_seconds: float = 0.0
    """Sum of the started calls' durations (creation to end): the load simulated. Divided by
    the concurrency it is how many seconds of that many concurrent calls were simulated."""


class Simulation:
    """Iterate to get ``(arrival offset, record)`` pairs in arrival order.

    Each iteration replays the same traffic from the start and resets ``stats``.
    """

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.stats = SimStats()

    def plans(self) -> Iterator[CallPlan]:
        """The calls this simulation makes, in creation order (ground truth for tests)."""
        cfg = self.config
        return plan_calls(cfg.calls, cfg.concurrency, cfg.seed, cfg.mix)

    def __iter__(self) -> Iterator[Arrival]:
        cfg = self.config
        stats = self.stats = SimStats()
        plans = self.plans()
        next_plan = next(plans, None)
        # (next send time, tie-breaker, that delivery, the call's stream)
        calls: list[tuple[float, int, Delivery, Iterator[Delivery]]] = []
        # (arrival time, tie-breaker, records)
        in_flight: list[tuple[float, int, tuple[TelemetryRecord, ...]]] = []
        seq = count()
        scale = 1.0 / cfg.compress
        inf = math.inf
        push, pop = heapq.heappush, heapq.heappop
        while True:
            # A call's first delivery may precede its creation by up to SDK_LEAD_MAX.
            plan_due = next_plan.created - SDK_LEAD_MAX if next_plan is not None else inf
            send_due = calls[0][0] if calls else inf
            arrival_due = in_flight[0][0] if in_flight else inf
            if arrival_due <= plan_due and arrival_due <= send_due:
                if arrival_due == inf:
                    return
                arrival, _, records = pop(in_flight)
                offset = arrival * scale
                for record in records:
                    yield offset, record
            elif plan_due <= send_due:
                assert next_plan is not None
                stream = call_stream(next_plan, cfg.start, cfg.mix, cfg.delivery)
                stats.calls_started += 1
                stats.call_seconds += next_plan.ended - next_plan.created
                first = next(stream, None)
                if first is not None:
                    push(calls, (first[0], next(seq), first, stream))
                next_plan = next(plans, None)
            else:
                _, _, (_, arrival_at, records), stream = pop(calls)
                stats.deliveries += 1
                if arrival_at is None:
                    stats.records_dropped += len(records)
                else:
                    stats.records_delivered += len(records)
                    push(in_flight, (arrival_at, next(seq), records))
                following = next(stream, None)
                if following is None:
                    stats.calls_done += 1
                else:
                    push(calls, (following[0], next(seq), following, stream))


def generate(config: SimConfig | None = None) -> Iterator[Arrival]:
    """``(arrival offset, record)`` pairs of a fresh simulation, in arrival order."""
    return iter(Simulation(config))


def write_ndjson(
    arrivals: Iterator[Arrival],
    out: BinaryIO,
    *,
    realtime: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[int], None] | None = None,
    progress_every: int = 5000,
) -> int:
    """Write records as NDJSON in arrival order; return how many were written.

    With ``realtime`` each record is held back until its (compressed) arrival offset has
    passed on ``clock``, and output is flushed before every wait so a reader sees records
    as they "arrive".
    """
    encoder = msgspec.json.Encoder()
    buffer = bytearray()
    began = clock()
    written = 0
    for offset, record in arrivals:
        if realtime:
            wait = began + offset - clock()
            if wait > 0:
                out.write(buffer)
                out.flush()
                buffer.clear()
                sleep(wait)
        encoder.encode_into(record, buffer, -1)
        buffer.extend(b"\n")
        written += 1
        if len(buffer) >= 1 << 16:
            out.write(buffer)
            buffer.clear()
        if progress is not None and written % progress_every == 0:
            progress(written)
    out.write(buffer)
    out.flush()
    if progress is not None:
        progress(written)
    return written
