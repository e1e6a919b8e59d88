"""`callstream demo` (`make demo`): the whole pipeline on this machine, live.

It starts `callstream serve` on the embedded backend with summary timers shortened
for a demo, plays simulated call traffic into it in compressed real time, and
shows the insight events coming out. Ctrl-C stops everything; a second run
reuses the data directory and its account.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from callstream.accounts import ensure_default_account
from callstream.config import Settings
from callstream.ingest.client import IngestClient
from callstream.ingest.sender import send_arrivals
from callstream.sim import SimConfig, Simulation

COMPRESS = 10.0
PARTIAL_AFTER = "2s"
COMPLETE_AFTER = "30s"
CONCURRENCY = 30.0
FEED = "/callstream/v1/Events"


@dataclass
class Board:
    """What the live view shows, updated from the events feed."""

    counts: Counter[str] = field(default_factory=Counter)
    recent: Counter[str] = field(default_factory=Counter)
    summaries: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=8))
    warnings: deque[str] = field(default_factory=lambda: deque(maxlen=6))
    sent: int = 0
    started: float = field(default_factory=time.monotonic)

    def add(self, event: dict[str, Any]) -> None:
        kind = str(event["type"]).removeprefix("com.twilio.voice.insights.")
        self.counts[kind] += 1
        self.recent[kind] += 1
        data = event["data"]
        if kind == "call-summary.complete":
            self.summaries.appendleft(data)
        elif "warning-raised" in str(data.get("group", "")):
            self.warnings.appendleft(f"{data['call_sid'][:12]}… {data['name']}")

    def render(self, rate_window: float) -> Group:
        table = Table("event type", "total", "per second", title="Insight events")
        for kind in sorted(self.counts):
            table.add_row(kind, f"{self.counts[kind]:,}", f"{self.recent[kind] / rate_window:.1f}")
        self.recent.clear()
        calls = Table(
            "call", "type", "state", "duration", "tags", title="Latest complete summaries"
        )
        for data in self.summaries:
            calls.add_row(
                data["call_sid"][:14] + "…",
                data.get("call_type", ""),
                data.get("call_state", ""),
                f"{data.get('duration', 0)} s",
                ", ".join(data.get("tags") or []) or "-",
            )
        uptime = time.monotonic() - self.started
        footer = (
            f"telemetry records sent {self.sent:,} · running {uptime:.0f} s · "
            f"traffic compressed {COMPRESS:g}x · Ctrl-C to stop"
        )
        warned = "\n".join(self.warnings) or "none yet"
        return Group(table, calls, Panel(warned, title="Quality warnings raised"), footer)


def _server(settings: Settings, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CALLSTREAM_DATA_DIR": str(settings.data_dir),
        "CALLSTREAM_PORT": str(port),
        "CALLSTREAM_HOST": settings.host,
        "CALLSTREAM_ACCOUNT_SID": settings.account_sid or "",
        "CALLSTREAM_AUTH_TOKEN": settings.auth_token or "",
        "CALLSTREAM_PARTIAL_AFTER": PARTIAL_AFTER,
        "CALLSTREAM_COMPLETE_AFTER": COMPLETE_AFTER,
    }
    log = (settings.data_dir / "demo-server.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "callstream", "serve"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches the demo, which stops the server in order
    )


async def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError("the server stopped; see demo-server.log in the data directory")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(url + "/healthz", timeout=1)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise TimeoutError("the server did not start in time")


async def _follow(url: str, auth: tuple[str, str], board: Board, stopping: asyncio.Event) -> None:
    after = -1
    async with httpx.AsyncClient(base_url=url, auth=auth, timeout=30) as client:
        while not stopping.is_set():
            response = await client.get(FEED, params={"After": after, "Wait": 2, "Limit": 1000})
            response.raise_for_status()
            body = response.json()
            for event in body["events"]:
                board.add(event)
            after = body["next_after"]


async def _run(url: str, auth: tuple[str, str], console: Console) -> None:
    board = Board()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    simulation = Simulation(
        SimConfig(
            calls=10_000_000,
            concurrency=CONCURRENCY,
            seed=int(time.time()),
            compress=COMPRESS,
            start=datetime.now(UTC),
        )
    )

    def sent(count: int) -> None:
        board.sent += count

    async with IngestClient(url, *auth) as client:
        tasks = [
            asyncio.create_task(
                send_arrivals(
                    simulation,
                    client,
                    realtime=True,
                    batch_size=200,
                    on_sent=sent,
                    stopping=stopping,
                )
            ),
            asyncio.create_task(_follow(url, auth, board, stopping)),
        ]
        with Live(board.render(1.0), console=console, refresh_per_second=2) as live:
            while not stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), 1.0)
                for task in tasks:
                    if task.done() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                live.update(board.render(1.0))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def run_demo(settings: Settings) -> None:
    from callstream.server import open_embedded

    console = Console()
    services = open_embedded(settings)
    try:
        account, _ = asyncio.run(
            ensure_default_account(services.accounts, settings.account_sid, settings.auth_token)
        )
    finally:
        services.db.close()
    settings = Settings(
        **{
            **{f: getattr(settings, f) for f in settings.__struct_fields__},
            "account_sid": account.sid,
            "auth_token": account.auth_token,
        }
    )
    url = settings.base_url
    console.print(f"[bold]callstream demo[/bold] · data in {Path(settings.data_dir).resolve()}")
    console.print(f"  server        {url}")
    console.print(f"  account_sid   {account.sid}")
    console.print(f"  auth_token    {account.auth_token}")
    console.print(
        f"  follow it     CALLSTREAM_ACCOUNT_SID={account.sid} "
        f"CALLSTREAM_AUTH_TOKEN={account.auth_token} .venv/bin/callstream tail --url {url}"
    )
    console.print(
        f"  timers        first partial {PARTIAL_AFTER}, complete {COMPLETE_AFTER} "
        f"after each call ends\n"
    )
    server = _server(settings, settings.port)
    try:
        asyncio.run(_wait_healthy(url, server, 60))
        asyncio.run(_run(url, (account.sid, account.auth_token), console))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        console.print("\nstopped")
