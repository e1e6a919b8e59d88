"""`callstream sinks|subscriptions|dlq`: shortcuts over a running server's REST API.

Each command is one or a few requests to the Event Streams v1 API (or callstream's delivery
status and dead-letter routes), so what it can do is exactly what the API allows. The server
and account come from --url, --account-sid, --auth-token or CALLSTREAM_URL,
CALLSTREAM_ACCOUNT_SID, CALLSTREAM_AUTH_TOKEN, as for `callstream tail`.

Exit codes: 0 done; 1 the API refused (its Twilio error message is printed) or could not be
reached; 2 bad usage.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, NoReturn
from urllib.parse import urlencode

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

EXIT_API = 1
EXIT_USAGE = 2
INSIGHTS_PREFIX = "com.twilio.voice.insights."

sinks_app = typer.Typer(no_args_is_help=True, help="Manage sinks (where events are sent).")
subscriptions_app = typer.Typer(
    no_args_is_help=True, help="Manage subscriptions (which events go to a sink)."
)
dlq_app = typer.Typer(no_args_is_help=True, help="Inspect and replay a sink's dead letters.")

# soft_wrap: a message stays on one line however narrow the terminal, so it can be grepped.
# Piped output is not cut to 80 columns (rich's width when there is no terminal).
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 240)
err = Console(stderr=True, soft_wrap=True)


class ApiFailure(Exception):
    """The server answered with an error, or could not be reached."""

    def __init__(self, message: str, status: int | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    def __str__(self) -> str:
        if self.status is None:
            return self.message
        return f"{self.message} (HTTP {self.status}, code {self.code})"


class RestClient:
    """A callstream server's REST API as one account sees it."""

    def __init__(self, url: str, account_sid: str, auth_token: str, timeout: float = 30.0) -> None:
        self._http = httpx.Client(
            base_url=url.rstrip("/"), auth=(account_sid, auth_token), timeout=timeout
        )

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        form: list[tuple[str, str]] | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        # A list of pairs, not a dict: Types is repeated, one JSON object per type.
        content = urlencode(form).encode() if form is not None else None
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if form is not None else {}
        try:
            response = self._http.request(
                method, path, content=content, headers=headers, params=params
            )
        except httpx.TransportError as exc:
            raise ApiFailure(f"cannot reach callstream at {self._http.base_url}: {exc}") from None
        if response.status_code >= 400:
            try:
                error = response.json()
                message, code = str(error["message"]), int(error["code"])
            except (ValueError, KeyError, TypeError):
                message, code = response.text[:200] or response.reason_phrase, 0
            raise ApiFailure(message, response.status_code, code)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ApiFailure(
                f"{response.request.url} did not answer JSON; is this callstream's URL?"
            ) from None

    def pages(self, path: str, key: str, params: dict[str, str] | None = None) -> Iterator[Any]:
        """Every record of a Twilio-style list, following ``meta.next_page_url``."""
        body = self.request("GET", path, params={"PageSize": "1000", **(params or {})})
        while True:
            yield from body.get(key, [])
            next_url = (body.get("meta") or {}).get("next_page_url")
            if not next_url:
                return
            body = self.request("GET", next_url)


# -- options shared by every command ------------------------------------------------------------

UrlOpt = Annotated[
    str, typer.Option("--url", envvar="CALLSTREAM_URL", help="callstream's base URL.")
]
SidOpt = Annotated[
    str | None,
    typer.Option("--account-sid", envvar="CALLSTREAM_ACCOUNT_SID", help="Account SID."),
]
TokenOpt = Annotated[
    str | None, typer.Option("--auth-token", envvar="CALLSTREAM_AUTH_TOKEN", help="Auth token.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
DEFAULT_URL = "http://127.0.0.1:8080"


def _usage(message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    raise typer.Exit(EXIT_USAGE)


def _client(url: str, account_sid: str | None, auth_token: str | None) -> RestClient:
    if not account_sid or not auth_token:
        _usage("give --account-sid and --auth-token (or CALLSTREAM_ACCOUNT_SID/AUTH_TOKEN)")
    return RestClient(url, account_sid, auth_token)


@contextmanager
def _api(url: str, account_sid: str | None, auth_token: str | None) -> Iterator[RestClient]:
    """A client of the server's REST API; an API refusal ends the command (exit 1)."""
    try:
        with _client(url, account_sid, auth_token) as api:
            yield api
    except ApiFailure as exc:
        _fail(exc)


def _fail(exc: ApiFailure) -> NoReturn:
    # The API's message is data, not markup: "Types[0]" must print as it is.
    err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
    raise typer.Exit(EXIT_API)


def _sid_column(header: str) -> Column:
    # SIDs are copied into the next command, so they are never shortened.
    return Column(header, no_wrap=True, min_width=34)


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))


def _destination(sink: dict[str, Any]) -> str:
    config = sink.get("sink_configuration") or {}
    return str(config.get("destination") or config.get("arn") or "")


# -- sinks --------------------------------------------------------------------------------------


@sinks_app.command("list")
def sinks_list(
    url: UrlOpt = DEFAULT_URL,
    account_sid: SidOpt = None,
    auth_token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the account's sinks."""
    with _api(url, account_sid, auth_token) as api:
        sinks = list(api.pages("/v1/Sinks", "sinks"))
    if as_json:
        _print_json(sinks)
        return
    table = Table(_sid_column("sid"), "type", "status", "destination", "description")
    for sink in sinks:
        table.add_row(
            sink["sid"], sink["sink_type"], sink["status"], _destination(sink), sink["description"]
        )
    out.print(table)


@sinks_app.command("create-webhook")
def sinks_create_webhook(
    destination: Annotated[str, typer.Argument(help="The receiver's URL.")],
    batch: Annotated[
        bool, typer.Option("--batch/--no-batch", help="Several events per request.")
    ] = False,
    description: Annotated[str, typer.Option(help="A name to recognise it by.")] = "",
    method: Annotated[str, typer.Option(help="POST or GET.")] = "POST",
    url: UrlOpt = DEFAULT_URL,
    account_sid: SidOpt = None,
    auth_token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a webhook sink; print its SID."""
    config = {"destination": destination, "method": method, "batch_events": batch}
    form = [
        ("Description", description or f"webhook to {destination}"),
        ("SinkType", "webhook"),
        ("SinkConfiguration", json.dumps(config)),
    ]
    with _api(url, account_sid, auth_token) as api:
        sink = api.request("POST", "/v1/Sinks", form=form)
    if as_json:
        _print_json(sink)
    else:
        out.print(f"created {sink['sid']} ({sink['status']}) -> {destination}")


@sinks_app.command("delete")
def sinks_delete(
    sid: Annotated[str, typer.Argument(help="The sink's SID (DG...).")],
    url: UrlOpt = DEFAULT_URL,
    account_sid: SidOpt = None,
    auth_token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete a sink (delete its subscription first)."""
    with _api(url, account_sid, auth_token) as api:
        api.request("DELETE", f"/v1/Sinks/{sid}")
    if as_json:
        _print_json({"deleted": sid})
    else:
        out.print(f"deleted {sid}")


@sinks_app.command("test")
def sinks_test(
    sid: Annotated[str, typer.Argument(help="The sink's SID (DG...).")],
    url: UrlOpt = DEFAULT_URL,
    account_sid: SidOpt = None,
    auth_token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send the sink a test event (com.twilio.eventstreams.test-event)."""
    with _api(url, account_sid, auth_token) as api:
        result = api.request("POST", f"/v1/Sinks/{sid}/Test")
    if as_json:
        _print_json(result)
    else:
        out.print(f"test event {result['result']} for {sid}")


def _age(seconds: Any) -> str:
    return "-" if seconds is None else f"{float(seconds):.1f} s"


@sinks_app.command("status")
def sinks_status(
    sid: Annotated[
        str | None, typer.Argument(help="One sink's SID; all sinks when left out.")
    ] = None,
    url: UrlOpt = DEFAULT_URL,
    account_sid: SidOpt = None,
    auth_token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delivery status: delivered, retried, failed, dead-lettered, pending, lag, last error."""
    with _api(url, account_sid, auth_token) as api:
        if sid is None:
            statuses = list(api.request("GET", "/callstream/v1/Sinks/Status")["sinks"])
        else:
            statuses = [api.request("GET", f"/callstream/v1/Sinks/{sid}/Status")]
    if as_json:
        _print_json(statuses[0] if sid is not None else statuses)
        return
    table = Table(
        _sid_column("sink"),
        "type",
        "status",
        "delivered",
        "retried",
        "failed",
        "dead-lettered",
        "pending",
        "lag",
        "last error",
    )
    for s in statuses:
        table.add_row(
            s.get("sink_sid", ""),
            s.get("sink_type", ""),
            s.get("status", ""),
            *(f"{s.get(k) or 0:,}" for k in ("delivered", "retried", "failed", "dead_lettered")),
            f"{s.get('pending') or 0:,}",
            _age(s.get("lag_seconds")),
            s.get("last_error") or "-",
        )
    out.print(table)


# -- subscriptions ------------------------------------------------------------------------------


def insights_types(api: RestClient) -> list[str]:
    """The Call Insights event types the server offers (not discontinued)."""
    return [
        t["type"]
        for t in api.pages("/v1/Types", "types")
        if t["type"].startswith(INSIGHTS_PREFIX) and t.get("status") != "discontinued"
    ]


def _type_names(api: RestClient, types: str) -> list[str]:
    if types.strip() == "all":
        return insights_types(api)
    names = [part.strip() for part in types.split(",") if part.strip()]
    if not names:
        _usage("--types takes all or a comma list of event types")
    # A short name (call-summary.complete) means the Call Insights type of that name.
    return [name if name.startswith("com.") else INSIGHTS_PREFIX + name for name in names]


def _with_types(api: RestClient, subscription: dict[str, Any]) -> dict[str, Any]:
    path = f"/v1/Subscriptions/{subscription['sid']}/SubscribedEvents"
    subscribed = [
        {"type": t["type"], "schema_version": t["schema_version"]} for t in api.pages(path, "types")
    ]
    return {**subscription, "types": subscribed}


@subscriptions_app.command("list")
def subscriptions_list(
    sink: Annotated[str | None, typer.Option("--sink", help="Only the sink's (DG...).")] = None,
    url: UrlOpt = DEFAULT_URL,
    account_sid: SidOpt = None,
    auth_token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List subscriptions with the event types each sends."""
    params = {"SinkSid": sink} if sink else None
    with _api(url, account_sid, auth_token) as api:
        subscriptions = [
            _with_types(api, s) for s in api.pages("/v1/Subscriptions", "subscriptions", params)
        ]
    if as_json:
        _print_json(subscriptions)
        return
    table = Table(
        _sid_column("sid"), _sid_column("sink"), "description", Column("types", min_width=30)
    )
    for s in subscriptions:
        types = "\n".join(
            f"{t['type'].removeprefix(INSIGHTS_PREFIX)} v{t['schema_version']}" for t in s["types"]
        )
        table.add_row(s["sid"], s["sink_sid"], s["description"], types)
    out.print(table)


@subscriptions_app.command("create")
def subscriptions_create(
    sink: Annotated[str, typer.Option("--sink", help="The sink to send to (DG...).")],
    types: Annotated[
        str,
        typer.Option(
            "--types",
            help="all (the seven Call Insights types) or a comma list, e.g. "
            "call-summary.complete,call-event.sdk",
        ),
    ],
    schema_version: Annotated[
        int | None,
        typer.Option(
            "--schema-version", min=1, help="Schema version of every type; default latest."
        ),
    ] = None,
    description: Annotated[str, typer.Option(help="A name to recognise it by.")] = "",
    url: UrlOpt = DEFAULT_URL,
    account_sid: SidOpt = None,
    auth_token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Subscribe a sink to event types; print the subscription's SID."""
    with _api(url, account_sid, auth_token) as api:
        names = _type_names(api, types)
        entries = [
            {"type": name}
            if schema_version is None
            else {"type": name, "schema_version": schema_version}
            for name in names
        ]
        form = [
            ("Description", description or f"{types} to {sink}"),
            ("SinkSid", sink),
            *(("Types", json.dumps(entry)) for entry in entries),
        ]
        subscription = _with_types(api, api.request("POST", "/v1/Subscriptions", form=form))
    if as_json:
        _print_json(subscription)
    else:
        out.print(
            f"created {subscription['sid']}: {len(subscription['types'])} event types -> {sink}"
        )


@subscriptions_app.command("delete")
def subscriptions_delete(
    sid: Annotated[str, typer.Argument(help="The subscription's SID (DF...).")],
    url: UrlOpt = DEFAULT_URL,
    account_sid: SidOpt = None,
    auth_token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete a subscription; its sink gets no more events."""
    with _api(url, account_sid, auth_token) as api:
        api.request("DELETE", f"/v1/Subscriptions/{sid}")
    if as_json:
        _print_json({"deleted": sid})
    else:
        out.print(f"deleted {sid}")


# -- dead letters -------------------------------------------------------------------------------


def _iso(value: str | None, flag: str) -> str | None:
    if value is None:
        return None
    try:
        datetime.fromisoformat(value)
    except ValueError:
        _usage(f"{flag} takes an ISO 8601 time such as 2026-01-31T12:00:00Z, not {value!r}")
    return value


@dlq_app.command("list")
def dlq_list(
    sink: Annotated[str, typer.Argument(help="The sink's SID (DG...).")],
    url: UrlOpt = DEFAULT_URL,
    account_sid: SidOpt = None,
    auth_token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the events the sink gave up on, oldest first."""
    with _api(url, account_sid, auth_token) as api:
        letters = list(api.pages(f"/callstream/v1/Sinks/{sink}/DeadLetters", "dead_letters"))
    if as_json:
        _print_json(letters)
        return
    table = Table("event id", "type", "dead at", "attempts", "reason")
    for letter in letters:
        table.add_row(
            letter.get("event_id", ""),
            str(letter.get("type", "")).removeprefix(INSIGHTS_PREFIX),
            str(letter.get("dead_at", "")),
            str(letter.get("attempts", "")),
            letter.get("reason") or "-",
        )
    out.print(table)


@dlq_app.command("replay")
def dlq_replay(
    sink: Annotated[str, typer.Argument(help="The sink's SID (DG...).")],
    event_id: Annotated[str | None, typer.Option("--event-id", help="Only this event.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only events dead-lettered at or after (ISO).")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Only events dead-lettered before (ISO).")
    ] = None,
    url: UrlOpt = DEFAULT_URL,
    account_sid: SidOpt = None,
    auth_token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Queue dead-lettered events for delivery again (all of them unless narrowed)."""
    if event_id is not None and (since is not None or until is not None):
        _usage("give either --event-id or --since/--until, not both")
    form: list[tuple[str, str]] = []
    if event_id is not None:
        form.append(("EventId", event_id))
    start, end = _iso(since, "--since"), _iso(until, "--until")
    if start is not None:
        form.append(("StartTime", start))
    if end is not None:
        form.append(("EndTime", end))
    with _api(url, account_sid, auth_token) as api:
        result = api.request("POST", f"/callstream/v1/Sinks/{sink}/DeadLetters/Replay", form=form)
    if as_json:
        _print_json(result)
    else:
        out.print(f"replayed {result['replayed']} events to {sink}")
