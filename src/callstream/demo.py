"""`callstream demo` (`make demo`): the whole pipeline on this machine, live.

It starts `callstream serve` on the embedded backend with summary timers shortened for a
demo, starts a webhook receiver on 127.0.0.1 in this process, points a webhook sink with a
subscription to the seven Call Insights event types at it through the REST API, plays
simulated call traffic into the server in compressed real time, and shows what the receiver
gets, by event type. The receiver checks every request's ``X-Twilio-Signature`` and
``bodySHA256`` as a Twilio receiver would.

Ctrl-C stops everything. A second run reuses the data directory, its account and its demo
sink (the decision "demo sink reuse" in docs/decisions/ says how a changed receiver port
is handled).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
from aiohttp import web
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from callstream.accounts import ensure_default_account
from callstream.cli_streams import ApiFailure, RestClient, insights_types
from callstream.config import Settings
from callstream.ingest.client import IngestClient
from callstream.ingest.sender import send_arrivals
from callstream.sim import SimConfig, Simulation
from callstream.sinks.webhook import body_sha256, signature

COMPRESS = 10.0
PARTIAL_AFTER = "2s"
COMPLETE_AFTER = "30s"
CONCURRENCY = 12.0
"""Calls in progress at once: enough for every event type, light on a laptop."""
DEMO_SINK = "callstream demo receiver"
RECEIVER_PATH = "/events"
INSIGHTS_PREFIX = "com.twilio.voice.insights."


class DemoError(RuntimeError):
    """The demo cannot go on; the message says why."""


@dataclass
class Board:
    """What the receiver has received, and what the live view shows."""

    counts: Counter[str] = field(default_factory=Counter)
    recent: Counter[str] = field(default_factory=Counter)
    summaries: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=8))
    warnings: deque[str] = field(default_factory=lambda: deque(maxlen=6))
    requests: int = 0
    rejected: int = 0
    sent: int = 0
    started: float = field(default_factory=time.monotonic)

    def add(self, event: dict[str, Any]) -> None:
        kind = str(event.get("type", "?")).removeprefix(INSIGHTS_PREFIX)
        self.counts[kind] += 1
        self.recent[kind] += 1
        data = event.get("data") or {}
        if kind == "call-summary.complete":
            self.summaries.appendleft(data)
        elif "warning-raised" in str(data.get("group", "")):
            self.warnings.appendleft(f"{str(data.get('call_sid'))[:12]}… {data.get('name')}")

    def snapshot(self) -> dict[str, Any]:
        return {
            "received": dict(sorted(self.counts.items())),
            "requests": self.requests,
            "rejected": self.rejected,
            "sent": self.sent,
        }

    def render(self, rate_window: float, console_url: str) -> Group:
        table = Table(
            "event type", "received", "per second", title="Events received by the demo webhook"
        )
        for kind in sorted(self.counts):
            table.add_row(kind, f"{self.counts[kind]:,}", f"{self.recent[kind] / rate_window:.1f}")
        self.recent.clear()
        calls = Table(
            "call", "type", "state", "duration", "tags", title="Latest complete summaries"
        )
        for data in self.summaries:
            calls.add_row(
                str(data.get("call_sid", ""))[:14] + "…",
                str(data.get("call_type", "")),
                str(data.get("call_state", "")),
                f"{data.get('duration', 0)} s",
                ", ".join(data.get("tags") or []) or "-",
            )
        uptime = time.monotonic() - self.started
        footer = (
            f"requests {self.requests:,} · bad signatures {self.rejected:,} · "
            f"telemetry records sent {self.sent:,} · running {uptime:.0f} s · "
            f"traffic compressed {COMPRESS:g}x\nconsole {console_url} · Ctrl-C to stop"
        )
        warned = "\n".join(self.warnings) or "none yet"
        return Group(table, calls, Panel(warned, title="Quality warnings raised"), footer)


class Receiver:
    """A webhook receiver on 127.0.0.1 that checks Twilio's signature and counts events."""

    def __init__(self, auth_token: str, board: Board) -> None:
        self._token = auth_token
        self._board = board
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def destination(self) -> str:
        return f"http://127.0.0.1:{self.port}{RECEIVER_PATH}"

    async def start(self, preferred_port: int) -> None:
        """Listen on ``preferred_port`` when it is free (so a demo sink can be kept across
        runs), else on any free port."""
        app = web.Application()
        app.router.add_post(RECEIVER_PATH, self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        for port in dict.fromkeys([preferred_port, 0]):
            site = web.TCPSite(self._runner, "127.0.0.1", port)
            try:
                await site.start()
            except OSError:
                continue
            self.port = int(self._runner.addresses[0][1])
            return
        raise DemoError("the demo receiver could not listen on 127.0.0.1")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        url = f"{request.scheme}://{request.host}{request.raw_path}"
        expected = signature(self._token, url)
        given = request.headers.get("X-Twilio-Signature", "")
        self._board.requests += 1
        if not hmac.compare_digest(expected, given) or request.query.get(
            "bodySHA256"
        ) != body_sha256(body):
            self._board.rejected += 1
            return web.Response(status=403, text="bad signature")
        try:
            events = json.loads(body)
        except ValueError:
            return web.Response(status=400, text="not JSON")
        for event in events if isinstance(events, list) else [events]:
            if isinstance(event, dict):
                self._board.add(event)
        return web.Response(status=200)


# -- the server --------------------------------------------------------------------------------


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
        # The demo's receiver is on this machine, which sinks may not reach by default.
        "CALLSTREAM_ALLOW_PRIVATE_DESTINATIONS": "true",
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


def _check_port_free(host: str, port: int) -> None:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            raise DemoError(
                f"{host}:{port} is in use (another callstream?); run the demo with --port N"
            ) from None


async def _wait_ready(
    url: str, process: subprocess.Popen[bytes], stopping: asyncio.Event, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline and not stopping.is_set():
            if process.poll() is not None:
                raise DemoError("the server stopped; see demo-server.log in the data directory")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(url + "/readyz", timeout=1)).status_code == 200:
                    return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), 0.1)  # poll interval, or stop at once
    if not stopping.is_set():
        raise DemoError("the server did not become ready in time; see demo-server.log")


# -- the demo sink -----------------------------------------------------------------------------


def _find_demo_sink(api: RestClient) -> dict[str, Any] | None:
    for sink in api.pages("/v1/Sinks", "sinks"):
        if sink["description"] == DEMO_SINK and sink["sink_type"] == "webhook":
            return dict(sink)
    return None


def _sink_port(sink: dict[str, Any] | None) -> int:
    if sink is None:
        return 0
    try:
        return urlsplit(str(sink["sink_configuration"].get("destination", ""))).port or 0
    except ValueError:
        return 0


def _ensure_sink(api: RestClient, found: dict[str, Any] | None, destination: str) -> str:
    """The SID of a demo sink delivering to ``destination``, subscribed to every Call
    Insights type: the one found when it already does, else a new one."""
    sink = found
    if sink is not None and sink["sink_configuration"].get("destination") != destination:
        # Twilio's API cannot change a sink's destination, so the demo replaces the sink.
        for old in api.pages("/v1/Subscriptions", "subscriptions", {"SinkSid": sink["sid"]}):
            api.request("DELETE", f"/v1/Subscriptions/{old['sid']}")
        api.request("DELETE", f"/v1/Sinks/{sink['sid']}")
        sink = None
    if sink is None:
        config = {"destination": destination, "method": "POST", "batch_events": True}
        form = [
            ("Description", DEMO_SINK),
            ("SinkType", "webhook"),
            ("SinkConfiguration", json.dumps(config)),
        ]
        sink = api.request("POST", "/v1/Sinks", form=form)
    assert sink is not None
    sid = str(sink["sid"])
    if not list(api.pages("/v1/Subscriptions", "subscriptions", {"SinkSid": sid})):
        form = [("Description", "callstream demo: every Call Insights event"), ("SinkSid", sid)]
        form += [("Types", json.dumps({"type": t})) for t in insights_types(api)]
        api.request("POST", "/v1/Subscriptions", form=form)
    return sid


# -- running -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoOptions:
    duration: float | None = None
    """Stop by itself after this many seconds; None runs until Ctrl-C."""
    board: bool = True
    """The live board; without it, one JSON line of counts per second (for scripts)."""


async def _play(
    url: str,
    auth: tuple[str, str],
    board: Board,
    stopping: asyncio.Event,
    show: Callable[[], None],
) -> None:
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
        sender = asyncio.create_task(
            send_arrivals(
                simulation,
                client,
                realtime=True,
                batch_size=200,
                on_sent=sent,
                stopping=stopping,
            )
        )
        try:
            while not stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), 1.0)
                if sender.done() and not stopping.is_set():
                    sender.result()  # a failed send ends the demo with its error
                show()
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)


async def _run(settings: Settings, options: DemoOptions, console: Console) -> None:
    assert settings.account_sid is not None and settings.auth_token is not None
    auth = (settings.account_sid, settings.auth_token)
    url = settings.base_url
    console_url = f"{url}/console/"
    _check_port_free(settings.host, settings.port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    if options.duration is not None:
        loop.call_later(options.duration, stopping.set)

    board = Board()
    receiver = Receiver(settings.auth_token, board)
    server = _server(settings, settings.port)
    try:
        await _wait_ready(url, server, stopping, 60)
        if stopping.is_set():
            return
        with RestClient(url, *auth) as api:
            found = await asyncio.to_thread(_find_demo_sink, api)
            await receiver.start(_sink_port(found))
            sink_sid = await asyncio.to_thread(_ensure_sink, api, found, receiver.destination)
        console.print(f"  demo sink     {sink_sid} -> {receiver.destination}", soft_wrap=True)
        console.print(
            f"  try           export CALLSTREAM_URL={url} "
            f"CALLSTREAM_ACCOUNT_SID={settings.account_sid} "
            f"CALLSTREAM_AUTH_TOKEN={settings.auth_token}\n"
            "                .venv/bin/callstream sinks status; .venv/bin/callstream tail\n",
            soft_wrap=True,
        )

        if options.board:
            with Live(
                board.render(1.0, console_url), console=console, refresh_per_second=2
            ) as live:
                await _play(
                    url, auth, board, stopping, lambda: live.update(board.render(1.0, console_url))
                )
        else:

            def line() -> None:
                console.print(json.dumps(board.snapshot()), soft_wrap=True, highlight=False)

            await _play(url, auth, board, stopping, line)
    finally:
        # The server first, while the receiver still answers its last deliveries.
        server.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(server.wait, 30)
        except subprocess.TimeoutExpired:
            server.kill()
        await receiver.stop()


def _with_account(settings: Settings) -> Settings:
    """``settings`` with the data directory's default account (created on a first run)."""
    from callstream.server import open_embedded

    services = open_embedded(settings)
    try:
        account, _ = asyncio.run(
            ensure_default_account(services.accounts, settings.account_sid, settings.auth_token)
        )
    finally:
        services.db.close()
    return msgspec.structs.replace(settings, account_sid=account.sid, auth_token=account.auth_token)


def run_demo(settings: Settings, options: DemoOptions | None = None) -> int:
    """Run the demo until Ctrl-C (or ``options.duration``); the process's exit status."""
    options = options or DemoOptions()
    console = Console()
    try:
        settings = _with_account(settings)
        url = settings.base_url
        console.print(f"[bold]callstream demo[/bold] · data in {Path(settings.data_dir).resolve()}")
        console.print(f"  server        {url}")
        console.print(f"  account_sid   {settings.account_sid}")
        console.print(f"  auth_token    {settings.auth_token}")
        console.print(f"  console       {url}/console/")
        console.print(
            f"  timers        first partial {PARTIAL_AFTER}, complete {COMPLETE_AFTER} "
            "after each call ends"
        )
        asyncio.run(_run(settings, options, console))
    except KeyboardInterrupt:  # Ctrl-C before the demo's own handler was in place
        pass
    except (DemoError, ApiFailure, httpx.HTTPError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        return 1
    console.print("\nstopped")
    return 0
