"""``callstream simulate``: write simulated call telemetry as NDJSON."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, BinaryIO

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from callstream.sim.generator import DEFAULT_START, SimConfig, Simulation, write_ndjson

__all__ = ["simulate"]


def _parse_start(value: str | None) -> datetime:
    if value is None:
        return DEFAULT_START
    if value == "now":
        return datetime.now(UTC).replace(microsecond=0)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            "expected an ISO 8601 time or 'now'", param_hint="--start"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def simulate(
    calls: Annotated[int, typer.Option("--calls", min=0, help="How many calls to simulate.")] = 100,
    concurrency: Annotated[
        float,
        typer.Option("--concurrency", min=0.001, help="About this many calls in progress at once."),
    ] = 10.0,
    seed: Annotated[int, typer.Option("--seed", help="Same seed and options, same output.")] = 0,
    compress: Annotated[
        float,
        typer.Option(
            "--compress",
            min=0.001,
            help="Divide arrival times by this (e.g. 60: an hour of traffic in a minute). "
            "Pair with PARTIAL_AFTER / COMPLETE_AFTER divided by the same factor.",
        ),
    ] = 1.0,
    output: Annotated[
        str, typer.Option("--output", "-o", help="NDJSON file to write, or - for stdout.")
    ] = "-",
    realtime: Annotated[
        bool,
        typer.Option(
            "--realtime/--no-realtime",
            help="Hold each record back until its (compressed) arrival time.",
        ),
    ] = False,
    start: Annotated[
        str | None,
        typer.Option(
            "--start",
            help="Time of the simulation's second 0 (ISO 8601, or 'now'). "
            "Default: 2025-01-01T00:00:00Z, so output is reproducible.",
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="Post to this callstream's ingest API instead of writing NDJSON.",
        ),
    ] = None,
    account_sid: Annotated[
        str | None,
        typer.Option(envvar="CALLSTREAM_ACCOUNT_SID", help="Account SID (with --url)."),
    ] = None,
    auth_token: Annotated[
        str | None,
        typer.Option(envvar="CALLSTREAM_AUTH_TOKEN", help="Auth token (with --url)."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, max=10_000, help="Records per ingest request (with --url).")
    ] = 500,
    requests: Annotated[
        int, typer.Option(min=1, max=64, help="Ingest requests in flight (with --url).")
    ] = 4,
) -> None:
    """Simulate call traffic: write its telemetry as NDJSON, or post it to a server.

    Every call type (carrier, SIP, SIP trunking, Voice SDK client), every outcome and
    network-quality profile occur, with late and lost deliveries (docs/ingest.md).
    """
    config = SimConfig(
        calls=calls,
        concurrency=concurrency,
        seed=seed,
        compress=compress,
        start=_parse_start(start),
    )
    simulation = Simulation(config)
    if url is not None:
        if not account_sid or not auth_token:
            raise typer.BadParameter(
                "posting needs --account-sid and --auth-token (or CALLSTREAM_ACCOUNT_SID "
                "and CALLSTREAM_AUTH_TOKEN)",
                param_hint="--url",
            )
        post(simulation, url, (account_sid, auth_token), realtime, batch_size, requests)
        return
    if output == "-":
        write_ndjson(iter(simulation), typer.get_binary_stream("stdout"), realtime=realtime)
        return
    with Path(output).open("wb") as out:
        _write_with_progress(simulation, out, realtime)


def _progress(console: Console, simulation: Simulation, verb: str) -> tuple[Progress, TaskID]:
    progress = Progress(
        TextColumn(verb),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("calls  {task.fields[records]} records"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    task = progress.add_task("calls", total=simulation.config.calls, records=0)
    return progress, task


def post(
    simulation: Simulation,
    url: str,
    auth: tuple[str, str],
    realtime: bool,
    batch_size: int,
    requests: int,
) -> None:
    """Send the simulation through the ingest API with a progress bar on stderr."""
    import asyncio

    from callstream.ingest.client import IngestClient, IngestRefused
    from callstream.ingest.sender import send_arrivals

    console = Console(stderr=True)
    progress, task = _progress(console, simulation, "posting")
    records = 0

    def advance(count: int) -> None:
        nonlocal records
        records += count
        progress.update(task, completed=simulation.stats.calls_done, records=records)

    async def run() -> int:
        async with IngestClient(url, *auth) as client:
            sent = await send_arrivals(
                simulation,
                client,
                realtime=realtime,
                batch_size=batch_size,
                concurrency=requests,
                on_sent=advance,
            )
            counts = client.totals
        console.print(
            f"posted {sent} records of {simulation.stats.calls_started} calls "
            f"({counts.accepted} accepted)"
        )
        return sent

    try:
        with progress:
            asyncio.run(run())
    except IngestRefused as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    except OSError as exc:
        console.print(f"[red]error:[/red] cannot reach {url}: {exc}")
        raise typer.Exit(1) from None


def _write_with_progress(simulation: Simulation, out: BinaryIO, realtime: bool) -> None:
    console = Console(stderr=True)
    progress, task = _progress(console, simulation, "simulating")

    def advance(written: int) -> None:
        progress.update(task, completed=simulation.stats.calls_done, records=written)

    with progress:
        written = write_ndjson(
            iter(simulation), out, realtime=realtime, progress=advance, progress_every=2000
        )
    stats = simulation.stats
    console.print(
        f"wrote {written} records of {stats.calls_started} calls "
        f"({stats.records_dropped} records lost in transit, as simulated)"
    )
