"""Webhook delivery, end to end: telemetry in through the ingest API, events out to a webhook
sink, with the receiver's own ceiling measured in the same run.

Figures:
- end-to-end events/s from the first ingest request to the last event at the receiver, for
  a sink with ``batch_events`` true and one with false (every Voice Insights gateway and SDK
  event and metrics type subscribed);
- the ceiling: the same receiver fed pre-encoded CloudEvent arrays of the same batch size
  (100, or 1) with as many requests in flight as callstream uses per sink (4), and the ratio;
- latency from ingest to delivery, p50 and p99, with telemetry posted at the pace that makes
  about ``LATENCY_RATE`` (10,000) events/s: per call, from the ingest request that carried
  its first record to its first event at the receiver. The rate actually reached is printed.

The receiver is ``bench/delivery_receiver.py`` in its own process. ``BENCH_DELIVERY_CALLS``
sets the traffic size (default 2,000 calls) for a smoke run.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from bench import servers
from bench.loadgen import write_bodies
from callstream.model.telemetry import encode_batch
from callstream.sim import SimConfig, Simulation

CALLS = int(os.environ.get("BENCH_DELIVERY_CALLS", "2000"))
BATCH_RECORDS = 500
SINK_BATCH = 100
IN_FLIGHT = 4
LATENCY_RATE = 10_000
TYPES = [
    "com.twilio.voice.insights.call-event.gateway",
    "com.twilio.voice.insights.call-event.sdk",
    "com.twilio.voice.insights.call-metrics.gateway",
    "com.twilio.voice.insights.call-metrics.sdk",
]
SERVER_SETTINGS = {
    "allow_private_destinations": "true",
    "partial_after": "1h",
    "complete_after": "2h",
}


def _traffic(calls: int, seed: int) -> list[tuple[bytes, list[str]]]:
    """Ingest bodies of BATCH_RECORDS records, each with the calls whose first record it is."""
    seen: set[str] = set()
    out: list[tuple[bytes, list[str]]] = []
    batch: list[Any] = []
    firsts: list[str] = []
    for _, record in Simulation(SimConfig(calls=calls, concurrency=calls / 4, seed=seed)):
        if record.call_sid not in seen:
            seen.add(record.call_sid)
            firsts.append(record.call_sid)
        batch.append(record)
        if len(batch) == BATCH_RECORDS:
            out.append((encode_batch(batch), firsts))
            batch, firsts = [], []
    if batch:
        out.append((encode_batch(batch), firsts))
    return out


def _receiver() -> servers.Process:
    port = servers.free_port()
    args = [sys.executable, "-m", "bench.delivery_receiver", str(port)]
    return servers.Process(args, {}, "/stats", port)


def _stats(receiver: servers.Process, calls: bool = False) -> dict[str, Any]:
    params = {"calls": "1"} if calls else {}
    body: dict[str, Any] = httpx.get(f"{receiver.url}/stats", params=params, timeout=30).json()
    return body


def _subscribe(server: servers.Process, receiver: servers.Process, batch: bool) -> str:
    auth = (servers.ACCOUNT_SID, servers.AUTH_TOKEN)
    with httpx.Client(base_url=server.url, auth=auth, timeout=30) as http:
        config = {"destination": f"{receiver.url}/hook", "method": "POST", "batch_events": batch}
        sink = http.post(
            "/v1/Sinks",
            data={
                "Description": "bench",
                "SinkType": "webhook",
                "SinkConfiguration": json.dumps(config),
            },
        )
        sink.raise_for_status()
        sid: str = sink.json()["sid"]
        types = [json.dumps({"type": t}) for t in TYPES]
        made = http.post(
            "/v1/Subscriptions",
            data={"Description": "bench", "SinkSid": sid, "Types": types},
        )
        made.raise_for_status()
        return sid


def _settled(server: servers.Process, receiver: servers.Process, sink_sid: str) -> dict[str, Any]:
    """Waits until the engine has caught up, the sink's queue is empty and the receiver has
    every delivered event; returns the receiver's figures."""
    auth = (servers.ACCOUNT_SID, servers.AUTH_TOKEN)
    deadline = time.monotonic() + 1800
    with httpx.Client(base_url=server.url, auth=auth, timeout=30) as http:
        while time.monotonic() < deadline:
            behind = http.get("/healthz").json().get("engine_partitions_behind", 0)
            status = http.get(f"/callstream/v1/Sinks/{sink_sid}/Status").json()
            stats = _stats(receiver)
            if behind == 0 and status["pending"] == 0 and stats["unique"] >= status["delivered"]:
                # The router may still hold a last read of the events log: look twice.
                time.sleep(1.0)
                again = _stats(receiver)
                if again["unique"] == stats["unique"]:
                    return again
            time.sleep(0.2)
    raise TimeoutError("delivery did not settle")


def _post(server: servers.Process, bodies: list[bytes], work: Path) -> None:
    bodies_file = work / "bodies.bin"
    write_bodies(bodies_file, bodies)
    args = [sys.executable, "-m", "bench.loadgen", f"{server.url}/v1/Telemetry", str(bodies_file)]
    args += ["--concurrency", "4", "--user", servers.ACCOUNT_SID]
    args += ["--password", servers.AUTH_TOKEN]
    out = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
    if out["non_2xx"]:
        raise RuntimeError(f"{out['non_2xx']} ingest requests failed")


def _end_to_end(
    work: Path, receiver: servers.Process, traffic: list[tuple[bytes, list[str]]], batch: bool
) -> tuple[float, int]:
    """(events/s, events) from the first ingest request to the last event received."""
    server = servers.callstream(work / f"e2e-{batch}", **SERVER_SETTINGS)
    try:
        sink_sid = _subscribe(server, receiver, batch)
        httpx.post(f"{receiver.url}/reset", timeout=30)
        started = time.time()
        _post(server, [body for body, _ in traffic], work)
        stats = _settled(server, receiver, sink_sid)
    finally:
        server.stop()
    return stats["unique"] / (stats["last_at"] - started), stats["unique"]


def _sample_event(n: int) -> bytes:
    """A CloudEvent of about the size of a gateway call-metrics event."""
    call_sid = f"CA{n % 500:032x}"
    event = {
        "specversion": "1.0",
        "type": TYPES[2],
        "source": f"/v1/Voice/{call_sid}/Metrics",
        "id": f"EZ{n:032x}",
        "dataschema": "https://events-schemas.twilio.com/VoiceInsights.CallMetric/2",
        "datacontenttype": "application/json",
        "time": "2026-11-22T05:00:00.000Z",
        "data": {
            "call_sid": call_sid,
            "account_sid": servers.ACCOUNT_SID,
            "edge": "carrier_edge",
            "direction": "both",
            "timestamp": "2026-11-22T05:00:00.000Z",
            "carrier_edge": {
                "metadata": {"region": "us1", "edge_location": "ashburn"},
                "codec": 0,
                "codec_name": "pcmu",
                "cumulative": {"bytes_received": 160000, "packets_received": 1000},
                "interval": {"packets_loss_percentage": 0.0, "jitter": {"avg": 1.2, "max": 3.4}},
            },
        },
    }
    return json.dumps(event, separators=(",", ":")).encode()


def _ceiling(receiver: servers.Process, events: int, per: int) -> float:
    """Events/s the receiver takes from a client that only sends, ``per`` events a request."""
    bodies = [
        b"[" + b",".join(_sample_event(n) for n in range(start, min(events, start + per))) + b"]"
        for start in range(0, events, per)
    ]

    async def run() -> float:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        for body in bodies:
            queue.put_nowait(body)
        headers = {"Content-Type": "application/json"}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def worker() -> None:
                while not queue.empty():
                    body = queue.get_nowait()
                    async with session.post(
                        f"{receiver.url}/hook", data=body, headers=headers
                    ) as response:
                        await response.read()

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
            return events / (time.perf_counter() - started)

    httpx.post(f"{receiver.url}/reset", timeout=30)
    return asyncio.run(run())


def _latency(
    work: Path,
    receiver: servers.Process,
    traffic: list[tuple[bytes, list[str]]],
    records_per_s: float,
) -> tuple[float, float, float]:
    """(p50 s, p99 s, events/s reached) with ingest paced at ``records_per_s``."""
    server = servers.callstream(work / "latency", **SERVER_SETTINGS)
    posted_at: dict[str, float] = {}
    try:
        sink_sid = _subscribe(server, receiver, batch=True)
        httpx.post(f"{receiver.url}/reset", timeout=30)
        interval = BATCH_RECORDS / records_per_s
        credentials = f"{servers.ACCOUNT_SID}:{servers.AUTH_TOKEN}".encode()
        authorization = "Basic " + base64.b64encode(credentials).decode("ascii")

        async def pace() -> float:
            started = time.perf_counter()
            headers = {"Content-Type": "application/json", "Authorization": authorization}
            async with aiohttp.ClientSession() as session:

                async def send(body: bytes, firsts: list[str]) -> None:
                    sent = time.time()
                    async with session.post(
                        f"{server.url}/v1/Telemetry", data=body, headers=headers
                    ) as response:
                        await response.read()
                        response.raise_for_status()
                    posted_at.update(dict.fromkeys(firsts, sent))

                tasks = []
                for n, (body, firsts) in enumerate(traffic):
                    delay = started + n * interval - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)  # pacing the load, not synchronising
                    tasks.append(asyncio.create_task(send(body, firsts)))
                await asyncio.gather(*tasks)
            return time.time()

        begun = time.time()
        asyncio.run(pace())
        stats = _settled(server, receiver, sink_sid)
        arrivals = _stats(receiver, calls=True)["calls"]
    finally:
        server.stop()
    waits = sorted(arrivals[c] - posted_at[c] for c in arrivals if c in posted_at)
    p50 = statistics.median(waits)
    p99 = waits[min(len(waits) - 1, int(len(waits) * 0.99))]
    return p50, p99, stats["unique"] / (stats["last_at"] - begun)


def main() -> dict[str, float]:
    figures: dict[str, float] = {}
    traffic = _traffic(CALLS, seed=7)
    records = sum(1 for _ in Simulation(SimConfig(calls=CALLS, concurrency=CALLS / 4, seed=7)))
    receiver = _receiver()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            for batch in (True, False):
                rate, events = _end_to_end(work, receiver, traffic, batch)
                per = SINK_BATCH if batch else 1
                ceiling = _ceiling(receiver, min(events, 50_000), per)
                name = "batched" if batch else "single"
                figures[f"delivery_{name}_events_per_s"] = rate
                figures[f"delivery_{name}_ceiling_events_per_s"] = ceiling
                print(
                    f"delivery {name:>7} {rate:>10,.0f} events/s end to end ({events:,} events)"
                    f"   receiver ceiling {ceiling:>10,.0f}   ratio {rate / ceiling:.2f}",
                    flush=True,
                )
            events_per_record = events / records
            p50, p99, reached = _latency(
                work, receiver, traffic, LATENCY_RATE / max(events_per_record, 1e-9)
            )
    finally:
        receiver.stop()
    figures["delivery_latency_p50_ms"] = p50 * 1000
    figures["delivery_latency_p99_ms"] = p99 * 1000
    figures["delivery_latency_events_per_s"] = reached
    print(
        f"latency  p50 {p50 * 1000:,.0f} ms   p99 {p99 * 1000:,.0f} ms   ingest to delivery, "
        f"paced for {LATENCY_RATE:,} events/s, reached {reached:,.0f} events/s",
        flush=True,
    )
    return figures


run = main  # the name the brief uses

if __name__ == "__main__":
    main()
