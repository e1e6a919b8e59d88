"""Simulator speed: can one core generate 10,000 concurrent calls' telemetry in real time?

The figure that matters is how many simulated seconds pass per wall-clock second while at
least 10,000 calls are in progress (target: >= 1). Calls start as a Poisson process and
their durations are heavy-tailed, so the number in progress ramps up slowly; the run asks
for more concurrency than the target (OVERDRIVE) and measures only the stretch of simulated
time during which the target number of calls is in progress, found from the call plans.
It stops at the end of that stretch instead of draining the remaining calls.

The measurement runs in a fresh process so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from typing import Final

from callstream.sim import CallPlan, SimConfig, Simulation, write_ndjson

TARGET_CONCURRENCY: Final = 10_000
OVERDRIVE: Final = 1.35
CALLS: Final = 30_000
TARGET_SPEED: Final = 1.0  # simulated seconds per wall second


def _busy_stretch(plans: Iterable[CallPlan], level: int) -> tuple[float, float] | None:
    """First and last moment at which at least ``level`` calls are in progress."""
    changes = sorted(
        [(p.created, 1) for p in plans] + [(p.ended, -1) for p in plans],
        key=lambda change: change[0],
    )
    active = 0
    first = last = None
    for at, delta in changes:
        active += delta
        if active >= level:
            first = at if first is None else first
            last = at
    return None if first is None or last is None else (first, last)


class _Discard:
    """A binary sink that only counts, so encoding is timed without disk I/O."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes | bytearray) -> int:
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def _measure(calls: int, target: int) -> dict[str, float]:
    simulation = Simulation(SimConfig(calls=calls, concurrency=target * OVERDRIVE, seed=1))
    stretch = _busy_stretch(list(simulation.plans()), target)
    if stretch is None:
        raise RuntimeError(f"{calls} calls never reach {target} in progress; raise CALLS")
    begin, end = stretch
    wall_begin = wall_end = 0.0
    records_begin = records_end = 0
    for records, (offset, _) in enumerate(simulation, 1):
        if not wall_begin and offset >= begin:
            wall_begin, records_begin = time.perf_counter(), records
        if offset >= end:
            wall_end, records_end = time.perf_counter(), records
            break
    wall = wall_end - wall_begin
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # NDJSON output on top of generation, at a smaller scale.
    small = Simulation(SimConfig(calls=2000, concurrency=500, seed=2))
    started = time.perf_counter()
    written = write_ndjson(iter(small), _Discard())  # type: ignore[arg-type]
    ndjson_rate = written / (time.perf_counter() - started)
    return {
        "sim_seconds_per_wall_second": (end - begin) / wall,
        "measured_sim_seconds": end - begin,
        "records_per_second": (records_end - records_begin) / wall,
        "records_per_sim_second": (records_end - records_begin) / (end - begin),
        "peak_rss_mb": peak_rss_mb,
        "ndjson_records_per_second": ndjson_rate,
    }


def main(calls: int = CALLS, target: int = TARGET_CONCURRENCY) -> dict[str, float]:
    """Measure, print and return the simulator's figures."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        figures = pool.submit(_measure, calls, target).result()
    speed = figures["sim_seconds_per_wall_second"]
    print(f"simulator, {target} concurrent calls, one core:")
    print(f"  simulated s per wall s   {speed:10.2f}   ({speed / TARGET_SPEED:.1f}x the target)")
    print(f"  measured stretch         {figures['measured_sim_seconds']:10.1f} simulated s")
    print(f"  records generated / s    {figures['records_per_second']:10.0f}")
    print(f"  records / simulated s    {figures['records_per_sim_second']:10.0f}")
    print(f"  peak RSS                 {figures['peak_rss_mb']:10.1f} MB")
    print(f"  NDJSON records / s       {figures['ndjson_records_per_second']:10.0f}   (+ encoding)")
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=CALLS)
    parser.add_argument("--target", type=int, default=TARGET_CONCURRENCY)
    arguments = parser.parse_args()
    main(arguments.calls, arguments.target)
