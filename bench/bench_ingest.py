"""Ingest and engine throughput, memory per active call (issue: ingest API and engine).

Figures, each beside its ceiling or target measured in the same run:
- ingest: records/s accepted and durable, batches of 500, against the same HTTP
  stack serving an endpoint that only reads the body (bench/ceiling_server.py);
- engine: records/s turned into events, draining a data directory filled by ingest;
- memory: RSS of the whole server while 10,000 calls are in progress.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import servers
from bench.loadgen import write_bodies
from callstream.model.telemetry import encode_batch
from callstream.sim import SimConfig, Simulation

BATCH = 500
RECORDS = 200_000
INGEST_TARGET = 100_000
ENGINE_TARGET = 50_000
MEMORY_TARGET_MB = 500
ACTIVE_CALLS = 10_000


def _bodies(records: int, seed: int) -> list[bytes]:
    batch: list[object] = []
    bodies: list[bytes] = []
    for _, record in Simulation(SimConfig(calls=records // 40, concurrency=500, seed=seed)):
        batch.append(record)
        if len(batch) == BATCH:
            bodies.append(encode_batch(batch))  # type: ignore[arg-type]
            batch = []
            if len(bodies) * BATCH >= records:
                break
    return bodies


def _load(url: str, bodies_file: Path, auth: bool, concurrency: int = 8) -> dict[str, float]:
    args = [sys.executable, "-m", "bench.loadgen", url, str(bodies_file)]
    args += ["--concurrency", str(concurrency)]
    if auth:
        args += ["--user", servers.ACCOUNT_SID, "--password", servers.AUTH_TOKEN]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    figures: dict[str, float] = json.loads(out)
    return figures


def _drain_engine(data_dir: Path, total: int) -> float:
    """Seconds for an engine-only process to consume ``total`` records."""
    from callstream.config import load_settings
    from callstream.insights.call import CallInsights
    from callstream.insights.engine import Engine
    from callstream.insights.step import EngineConfig
    from callstream.server import open_embedded

    services = open_embedded(load_settings({"data_dir": data_dir}))

    async def run() -> float:
        engine = Engine(services.telemetry, services.engine_store, CallInsights(EngineConfig()))
        started = time.perf_counter()
        engine.start()
        while engine.processed < total:
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        await engine.stop()
        return elapsed

    try:
        return asyncio.run(run())
    finally:
        services.db.close()


def _busy_moment(simulation: Simulation, level: int) -> float:
    """The first simulated second at which ``level`` calls are in progress."""
    changes = sorted(
        [(p.created, 1) for p in simulation.plans()] + [(p.ended, -1) for p in simulation.plans()]
    )
    active = 0
    for at, delta in changes:
        active += delta
        if active >= level:
            return at
    raise ValueError(f"the simulation never has {level} calls in progress")


def _memory_at_active_calls(work: Path) -> tuple[float, float]:
    """(server RSS MB with ACTIVE_CALLS calls in progress, RSS MB when idle)."""
    simulation = Simulation(
        SimConfig(calls=ACTIVE_CALLS * 3, concurrency=ACTIVE_CALLS * 1.25, seed=5)
    )
    busy = _busy_moment(simulation, ACTIVE_CALLS)
    server = servers.callstream(work / "memory")
    try:
        idle = server.rss_mb()
        bodies: list[bytes] = []
        batch: list[object] = []
        for offset, record in simulation:
            if offset > busy:
                break
            batch.append(record)
            if len(batch) == BATCH:
                bodies.append(encode_batch(batch))  # type: ignore[arg-type]
                batch = []
        bodies_file = work / "memory.bin"
        write_bodies(bodies_file, bodies)
        _load(server.url + "/v1/Telemetry", bodies_file, auth=True, concurrency=4)
        _wait_for_engine(server)
        return server.rss_mb(), idle
    finally:
        server.stop()


def _wait_for_engine(server: servers.Process, timeout: float = 900) -> None:
    """Until the engine has consumed everything ingested (its lag is zero)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = httpx.get(server.url + "/healthz", timeout=10).json()
        if status.get("engine_partitions_behind", 0) == 0:
            return
        time.sleep(1)
    raise TimeoutError("the engine did not catch up")


def main() -> dict[str, float]:
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bodies = _bodies(RECORDS, seed=11)
        records = len(bodies) * BATCH
        bodies_file = work / "bodies.bin"
        write_bodies(bodies_file, bodies)

        ceiling = servers.ceiling()
        try:
            bare = _load(ceiling.url + "/v1/Telemetry", bodies_file, auth=False)
        finally:
            ceiling.stop()
        ceiling_rps = bare["requests_per_second"] * BATCH

        server = servers.callstream(work / "data", roles="api,ingest")
        try:
            ingest = _load(server.url + "/v1/Telemetry", bodies_file, auth=True)
        finally:
            server.stop()
        if ingest["non_2xx"]:
            raise RuntimeError(f"{ingest['non_2xx']} ingest requests failed")
        ingest_rps = ingest["requests_per_second"] * BATCH
        figures["ingest_records_per_s"] = ingest_rps
        figures["ingest_ceiling_records_per_s"] = ceiling_rps
        figures["ingest_p99_ms"] = ingest["p99_ms"]

        engine_seconds = _drain_engine(work / "data", records)
        figures["engine_records_per_s"] = records / engine_seconds

        busy_rss, idle_rss = _memory_at_active_calls(work)
        figures["rss_mb_at_10k_calls"] = busy_rss
        figures["rss_mb_idle"] = idle_rss

    print(
        f"ingest   {ingest_rps:>10,.0f} records/s   ceiling {ceiling_rps:>10,.0f}   "
        f"ratio {ingest_rps / ceiling_rps:.2f}   target {INGEST_TARGET:,} "
        f"({ingest_rps / INGEST_TARGET:.2f}x)   p99 {ingest['p99_ms']:.1f} ms per batch"
    )
    print(
        f"engine   {figures['engine_records_per_s']:>10,.0f} records/s   target {ENGINE_TARGET:,} "
        f"({figures['engine_records_per_s'] / ENGINE_TARGET:.2f}x)"
    )
    print(
        f"memory   {busy_rss:>10,.0f} MB RSS with {ACTIVE_CALLS:,} calls in progress   "
        f"idle {idle_rss:,.0f} MB   target < {MEMORY_TARGET_MB} MB "
        f"({busy_rss / MEMORY_TARGET_MB:.2f} of it)"
    )
    return figures


if __name__ == "__main__":
    main()
