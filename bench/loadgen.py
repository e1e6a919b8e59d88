"""An HTTP load generator for the benchmarks: pre-encoded bodies, bounded concurrency.

Runs in its own process (`python -m bench.loadgen`), so the server under test
has its cores to itself as far as two cores allow. Prints one JSON line of figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import aiohttp


async def _post_all(
    url: str,
    bodies: list[bytes],
    auth: aiohttp.BasicAuth | None,
    concurrency: int,
    content_type: str,
) -> dict[str, float]:
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, auth=auth) as session:

        async def worker() -> None:
            while True:
                try:
                    body = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                started = time.perf_counter()
                async with session.post(
                    url, data=body, headers={"content-type": content_type}
                ) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(bodies),
        "seconds": elapsed,
        "requests_per_second": len(bodies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "non_2xx": sum(n for status, n in statuses.items() if not 200 <= status < 300),
    }


def write_bodies(path: Path, bodies: list[bytes]) -> None:
    with path.open("wb") as out:
        for body in bodies:
            out.write(len(body).to_bytes(4, "big"))
            out.write(body)


def read_bodies(path: Path) -> list[bytes]:
    raw = path.read_bytes()
    bodies, at = [], 0
    while at < len(raw):
        size = int.from_bytes(raw[at : at + 4], "big")
        bodies.append(raw[at + 4 : at + 4 + size])
        at += 4 + size
    return bodies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("bodies", type=Path, help="file of bodies, each a 4-byte length + bytes")
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--content-type", default="application/json")
    args = parser.parse_args()
    bodies = read_bodies(args.bodies)
    auth = aiohttp.BasicAuth(args.user, args.password) if args.user else None
    figures = asyncio.run(_post_all(args.url, bodies, auth, args.concurrency, args.content_type))
    json.dump(figures, sys.stdout)
    print()


if __name__ == "__main__":
    main()
