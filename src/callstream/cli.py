"""The `callstream` command line."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from callstream.accounts import AccountError, create_account
from callstream.cli_db import db_app
from callstream.cli_streams import dlq_app, sinks_app, subscriptions_app
from callstream.config import Settings, SettingsError, load_settings
from callstream.predictor_cli import predictor_app
from callstream.sim.cli import simulate
from callstream.store.interfaces import Account

app = typer.Typer(
    no_args_is_help=True,
    help="Self-hosted Voice Insights Event Streams.",
    pretty_exceptions_enable=False,
)
accounts_app = typer.Typer(no_args_is_help=True, help="Manage accounts (embedded backend).")
app.add_typer(accounts_app, name="accounts")
app.command("simulate")(simulate)
app.add_typer(predictor_app, name="predictor")
app.add_typer(sinks_app, name="sinks")
app.add_typer(subscriptions_app, name="subscriptions")
app.add_typer(dlq_app, name="dlq")
app.add_typer(db_app, name="db")

err = Console(stderr=True)

# Exit codes: 0 done, 1 failed, 2 bad usage or settings.
EXIT_USAGE = 2

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="TOML settings file (or CALLSTREAM_CONFIG).")
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Embedded data directory [env CALLSTREAM_DATA_DIR]."),
]


def _settings(config: Path | None, **flags: Any) -> Settings:
    try:
        return load_settings(flags, os.environ, config)
    except SettingsError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_USAGE) from None


@app.command()
def serve(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    host: Annotated[str | None, typer.Option(help="Listen address [env CALLSTREAM_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port [env CALLSTREAM_PORT].")] = None,
    public_url: Annotated[
        str | None, typer.Option(help="Base URL in links [env CALLSTREAM_PUBLIC_URL].")
    ] = None,
    partial_after: Annotated[
        str | None, typer.Option(help="First partial summary after call end, e.g. 10s.")
    ] = None,
    complete_after: Annotated[
        str | None, typer.Option(help="Complete summary after call end, e.g. 30m.")
    ] = None,
    account_sid: Annotated[str | None, typer.Option(help="Default account SID.")] = None,
    auth_token: Annotated[str | None, typer.Option(help="Default account auth token.")] = None,
    roles: Annotated[
        str | None,
        typer.Option(help="Stages to run: all, or a comma list of api, ingest, engine."),
    ] = None,
    # Delivery settings (docs/api.md, Delivery settings); env CALLSTREAM_<NAME> too.
    delivery_concurrency: Annotated[
        int | None, typer.Option(help="Requests in flight per sink (4).")
    ] = None,
    delivery_batch_size: Annotated[
        int | None, typer.Option(help="Events per request for batch_events sinks (100).")
    ] = None,
    delivery_batch_bytes: Annotated[
        int | None, typer.Option(help="Bytes per request for batch_events sinks (1 MiB).")
    ] = None,
    delivery_linger: Annotated[
        str | None, typer.Option(help="How long a batch may wait to fill, e.g. 50ms.")
    ] = None,
    delivery_timeout: Annotated[
        str | None, typer.Option(help="How long a sink has to answer, e.g. 5s.")
    ] = None,
    delivery_retry_base: Annotated[
        str | None, typer.Option(help="First retry delay, doubling, e.g. 1s.")
    ] = None,
    delivery_retry_cap: Annotated[
        str | None, typer.Option(help="Longest retry delay, e.g. 10m.")
    ] = None,
    delivery_retry_window: Annotated[
        str | None, typer.Option(help="Retry an event this long, then dead-letter it (4h).")
    ] = None,
    delivery_lease: Annotated[
        str | None, typer.Option(help="How long a claimed event stays hidden, e.g. 60s.")
    ] = None,
    delivery_attempts_kept: Annotated[
        int | None, typer.Option(help="Attempt-log rows kept per sink (200).")
    ] = None,
    delivery_idle_exit: Annotated[
        str | None, typer.Option(help="An idle sink's worker ends after this, e.g. 10s.")
    ] = None,
    delivery_throttle_rate: Annotated[
        float | None, typer.Option(help="Events/s a failing sink is capped at (100).")
    ] = None,
    delivery_throttle_recovery: Annotated[
        str | None, typer.Option(help="Quiet time before the cap ramps back up (5m).")
    ] = None,
    sink_failure_threshold: Annotated[
        int | None, typer.Option(help="Failed requests in a row before a sink is failed (10).")
    ] = None,
    metrics_token: Annotated[
        str | None, typer.Option(help="Bearer token that opens GET /metrics.")
    ] = None,
    backend: Annotated[
        str | None, typer.Option(help="embedded (default) or nats [env CALLSTREAM_BACKEND].")
    ] = None,
    nats_url: Annotated[
        str | None, typer.Option(help="BACKEND=nats: NATS server URL(s), comma-separated.")
    ] = None,
    database_url: Annotated[str | None, typer.Option(help="BACKEND=nats: PostgreSQL URL.")] = None,
) -> None:
    """Run callstream: ingest, engine, delivery and the APIs (all roles unless --roles)."""
    from callstream.server import serve as run

    settings = _settings(
        config,
        backend=backend,
        nats_url=nats_url,
        database_url=database_url,
        data_dir=data_dir,
        host=host,
        port=port,
        public_url=public_url,
        partial_after=partial_after,
        complete_after=complete_after,
        account_sid=account_sid,
        auth_token=auth_token,
        roles=roles,
        delivery_concurrency=delivery_concurrency,
        delivery_batch_size=delivery_batch_size,
        delivery_batch_bytes=delivery_batch_bytes,
        delivery_linger=delivery_linger,
        delivery_timeout=delivery_timeout,
        delivery_retry_base=delivery_retry_base,
        delivery_retry_cap=delivery_retry_cap,
        delivery_retry_window=delivery_retry_window,
        delivery_lease=delivery_lease,
        delivery_attempts_kept=delivery_attempts_kept,
        delivery_idle_exit=delivery_idle_exit,
        delivery_throttle_rate=delivery_throttle_rate,
        delivery_throttle_recovery=delivery_throttle_recovery,
        sink_failure_threshold=sink_failure_threshold,
        metrics_token=metrics_token,
    )
    try:
        run(settings)
    except SettingsError as exc:  # a setting checked where it is used, e.g. DELIVERY_*
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    except AccountError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


@app.command()
def worker(
    role: Annotated[
        list[str],
        typer.Option(help="A role to run: api, ingest, engine or delivery (repeatable, or a,b)."),
    ],
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Listen address [env CALLSTREAM_HOST].")] = None,
    port: Annotated[
        int | None, typer.Option(help="Port for the API and /healthz, /readyz, /metrics.")
    ] = None,
    backend: Annotated[
        str | None, typer.Option(help="nats (default for workers) [env CALLSTREAM_BACKEND].")
    ] = None,
    nats_url: Annotated[
        str | None, typer.Option(help="NATS server URL(s), comma-separated.")
    ] = None,
    database_url: Annotated[str | None, typer.Option(help="PostgreSQL URL.")] = None,
    public_url: Annotated[
        str | None, typer.Option(help="Base URL in links [env CALLSTREAM_PUBLIC_URL].")
    ] = None,
) -> None:
    """Run some roles of callstream on the distributed backend; start any number of copies.

    Every other setting comes from the environment (CALLSTREAM_*) or --config, as for serve.
    """
    from callstream.server import serve as run

    roles = ",".join(role)
    settings = _settings(
        config,
        roles=roles,
        host=host,
        port=port,
        backend=backend,
        nats_url=nats_url,
        database_url=database_url,
        public_url=public_url,
    )
    if backend is None and "CALLSTREAM_BACKEND" not in os.environ and config is None:
        settings = msgspec.structs.replace(settings, backend="nats")
    if settings.backend != "nats":
        err.print("[red]error:[/red] workers share their work through NATS: use --backend nats")
        raise typer.Exit(EXIT_USAGE)
    try:
        run(settings)
    except SettingsError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    except AccountError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


def _account_dict(account: Account) -> dict[str, str]:
    return {"account_sid": account.sid, "auth_token": account.auth_token}


@accounts_app.command("create")
def accounts_create(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    friendly_name: Annotated[str, typer.Option(help="A name to recognise it by.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Create an account and print its SID and auth token."""
    from callstream.server import open_embedded

    services = open_embedded(_settings(config, data_dir=data_dir))
    try:
        account = asyncio.run(create_account(services.accounts, friendly_name=friendly_name))
    except AccountError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        services.db.close()
    if as_json:
        typer.echo(json.dumps(_account_dict(account)))
    else:
        typer.echo(f"account_sid  {account.sid}\nauth_token   {account.auth_token}")


@accounts_app.command("create-key")
def accounts_create_key(
    account_sid: Annotated[str, typer.Argument(help="The account the key belongs to.")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    friendly_name: Annotated[str, typer.Option(help="A name to recognise it by.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Create an API key (SK...) that authenticates as the account; print its secret."""
    from callstream.accounts import create_api_key
    from callstream.server import open_embedded

    services = open_embedded(_settings(config, data_dir=data_dir))
    try:
        key = asyncio.run(create_api_key(services.accounts, account_sid, friendly_name))
    except AccountError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        services.db.close()
    if as_json:
        typer.echo(json.dumps({"sid": key.sid, "secret": key.secret, "account_sid": account_sid}))
    else:
        typer.echo(f"sid      {key.sid}\nsecret   {key.secret}\n(the secret is not shown again)")


@accounts_app.command("list")
def accounts_list(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    show_tokens: Annotated[bool, typer.Option(help="Show auth tokens too.")] = False,
) -> None:
    """List the accounts of a data directory."""
    from callstream.server import open_embedded

    services = open_embedded(_settings(config, data_dir=data_dir))
    try:
        accounts = asyncio.run(services.accounts.list_accounts())
    finally:
        services.db.close()
    if as_json:
        rows = [
            {**_account_dict(a), "friendly_name": a.friendly_name}
            if show_tokens
            else {"account_sid": a.sid, "friendly_name": a.friendly_name}
            for a in accounts
        ]
        typer.echo(json.dumps(rows))
        return
    table = Table("account_sid", "friendly_name", *(["auth_token"] if show_tokens else []))
    for a in accounts:
        table.add_row(a.sid, a.friendly_name, *([a.auth_token] if show_tokens else []))
    Console().print(table)


@app.command()
def demo(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    port: Annotated[int | None, typer.Option(help="Listen port [env CALLSTREAM_PORT].")] = None,
    duration: Annotated[
        str | None, typer.Option(help="Stop by itself after this long, e.g. 30s.")
    ] = None,
    board: Annotated[
        bool, typer.Option(help="The live board; --no-board prints JSON counts every second.")
    ] = True,
) -> None:
    """Run the server, a webhook receiver subscribed to every event, and simulated calls."""
    from callstream.config import parse_duration
    from callstream.demo import DemoOptions, run_demo

    try:
        seconds = None if duration is None else parse_duration(duration)
    except SettingsError as exc:
        err.print(f"[red]error:[/red] --duration: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    options = DemoOptions(duration=seconds, board=board)
    raise typer.Exit(run_demo(_settings(config, data_dir=data_dir, port=port), options))


@app.command()
def tail(
    url: Annotated[
        str, typer.Option(envvar="CALLSTREAM_URL", help="callstream's base URL.")
    ] = "http://127.0.0.1:8080",
    account_sid: Annotated[
        str | None, typer.Option(envvar="CALLSTREAM_ACCOUNT_SID", help="Account SID.")
    ] = None,
    auth_token: Annotated[
        str | None, typer.Option(envvar="CALLSTREAM_AUTH_TOKEN", help="Auth token.")
    ] = None,
    event_type: Annotated[
        list[str] | None, typer.Option("--type", help="Only this event type (repeatable).")
    ] = None,
    call_sid: Annotated[str | None, typer.Option(help="Only events of this call.")] = None,
    from_start: Annotated[
        bool, typer.Option("--from-start", help="Begin with the oldest event, not the newest.")
    ] = False,
    follow: Annotated[bool, typer.Option(help="Keep waiting for new events.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="One CloudEvent JSON per line.")] = False,
) -> None:
    """Follow an account's insight events as the engine produces them."""
    from callstream.tail import TailError, follow_events

    if not account_sid or not auth_token:
        err.print("[red]error:[/red] give --account-sid and --auth-token (or CALLSTREAM_*)")
        raise typer.Exit(EXIT_USAGE)
    try:
        follow_events(
            url,
            (account_sid, auth_token),
            types=event_type or [],
            call_sid=call_sid,
            from_start=from_start,
            follow=follow,
            as_json=as_json,
        )
    except TailError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass


def main() -> None:
    app()
