"""callstream's delivery operations API: per-sink status, attempt log, dead letters, replay,
re-enable (not a Twilio API; Twilio shows these in its console and debugger).

Paths live under ``/callstream/v1/Sinks``, beside Twilio's ``/v1/Sinks``, and take the same
account Basic auth; another account's sink is not found (20404), like an unknown one.
Counts are events, not requests (``store/delivery.py``); times are ISO 8601 UTC with
milliseconds. The OpenAPI description is ``api/openapi_delivery.py``; docs/api.md has the
contract the console and the CLI read.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from callstream.api.auth import require_account
from callstream.api.errors import ApiError
from callstream.api.pagination import read_page
from callstream.api.sinks import MAX_SINKS
from callstream.api.wire import (
    INVALID_PARAMETER,
    invalid,
    json_response,
    list_response,
    not_found,
    read_form,
)
from callstream.store.control import ControlStore, NotFound, Sink, Window
from callstream.store.delivery import Attempt, DeadLetter, DeliveryStore, SinkStats
from callstream.store.interfaces import AccountStore
from callstream.streams.throttle import ThrottlePolicy

NOT_FOUND = 20404

_decoder = msgspec.json.Decoder()


class SinkStatus(msgspec.Struct, frozen=True, kw_only=True):
    sink_sid: str
    sink_type: str
    status: str
    delivered: int
    retried: int
    failed: int
    dead_lettered: int
    pending: int
    lag_seconds: float | None
    last_error: str | None
    last_success_at: str | None
    consecutive_failures: int
    throttled_rate: float | None


class AttemptResource(msgspec.Struct, frozen=True, kw_only=True):
    time: str
    events: int
    ok: bool
    status: int | None
    error: str | None
    duration_ms: float


class DeadLetterResource(msgspec.Struct, frozen=True, kw_only=True):
    event_id: str
    type: str
    enqueued_at: str
    dead_at: str
    attempts: int
    reason: str
    event: dict[str, object]


def iso(moment: float) -> str:
    """``2026-11-22T05:40:01.123Z``."""
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _parse_time(raw: str | None, name: str) -> float | None:
    if raw is None or not raw.strip():
        return None
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise invalid(name, f"{raw!r} is not an ISO 8601 date-time") from None
    if moment.tzinfo is None:  # no offset: UTC, as every time this API writes
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class DeliveryRoutes:
    def __init__(
        self,
        accounts: AccountStore,
        control: ControlStore,
        queue: DeliveryStore,
        base_url: str,
        throttle: ThrottlePolicy,
    ) -> None:
        self._accounts = accounts
        self._control = control
        self._queue = queue
        self._base_url = base_url
        self._throttle = throttle

    def routes(self) -> list[BaseRoute]:
        base = "/callstream/v1/Sinks"
        return [
            Route(f"{base}/Status", self.list_status, methods=["GET"]),
            Route(f"{base}/{{sid}}/Status", self.fetch_status, methods=["GET"]),
            Route(f"{base}/{{sid}}/Attempts", self.attempts, methods=["GET"]),
            Route(f"{base}/{{sid}}/DeadLetters", self.dead_letters, methods=["GET"]),
            Route(f"{base}/{{sid}}/DeadLetters/Replay", self.replay, methods=["POST"]),
            Route(f"{base}/{{sid}}/Enable", self.enable, methods=["POST"]),
        ]

    # -- helpers -----------------------------------------------------------------------------

    async def _sink(self, request: Request) -> Sink:
        account = await require_account(request, self._accounts)
        sid: str = request.path_params["sid"]
        sink = await self._control.get_sink(account.sid, sid)
        if sink is None:
            raise not_found(NOT_FOUND, f"Sink {sid} was not found")
        return sink

    def status(self, sink: Sink, stats: SinkStats, now: float) -> SinkStatus:
        oldest = stats.oldest_enqueued_at
        return SinkStatus(
            sink_sid=sink.sid,
            sink_type=sink.sink_type,
            status=sink.status,
            delivered=stats.delivered,
            retried=stats.retried,
            failed=stats.failed,
            dead_lettered=stats.dead_lettered,
            pending=stats.pending,
            lag_seconds=None if oldest is None else round(max(0.0, now - oldest), 3),
            last_error=stats.last_error,
            last_success_at=None if stats.last_success_at is None else iso(stats.last_success_at),
            consecutive_failures=stats.consecutive_failures,
            throttled_rate=self._rate(stats, now),
        )

    def _rate(self, stats: SinkStats, now: float) -> float | None:
        rate = self._throttle.current(stats.throttled_rate, stats.last_error_at, now)
        return None if rate is None else round(rate, 3)

    async def _status_of(self, sink: Sink) -> SinkStatus:
        stats = await self._queue.sink_stats([sink.sid])
        return self.status(sink, stats[sink.sid], time.time())

    # -- routes ------------------------------------------------------------------------------

    async def list_status(self, request: Request) -> Response:
        account = await require_account(request, self._accounts)
        sinks = await self._control.list_sinks(account.sid, Window(limit=MAX_SINKS * 10))
        stats = await self._queue.sink_stats([s.sid for s in sinks])
        now = time.time()
        return json_response({"sinks": [self.status(s, stats[s.sid], now) for s in sinks]})

    async def fetch_status(self, request: Request) -> Response:
        return json_response(await self._status_of(await self._sink(request)))

    async def attempts(self, request: Request) -> Response:
        sink = await self._sink(request)
        page = read_page(request)
        rows = await self._queue.attempts(sink.sid, page.size)
        return json_response({"attempts": [_attempt(a) for a in rows]})

    async def dead_letters(self, request: Request) -> Response:
        sink = await self._sink(request)
        page = read_page(request)
        after_id = before_id = None
        if page.key is not None:
            if len(page.key) != 1 or not isinstance(page.key[0], int):
                raise ApiError(400, INVALID_PARAMETER, "PageToken is not a valid page token")
            if page.direction == "before":
                before_id = page.key[0]
            else:
                after_id = page.key[0]
        rows = await self._queue.dead_letters(
            sink.sid, page.size + 1, after_id=after_id, before_id=before_id
        )
        if before_id is not None:
            shown, has_next = rows[-page.size :], True
        else:
            shown, has_next = rows[: page.size], len(rows) > page.size
        return list_response(
            request,
            self._base_url,
            "dead_letters",
            page,
            [_dead_letter(d) for d in shown],
            first_key=[shown[0].id] if shown else None,
            last_key=[shown[-1].id] if shown else None,
            has_next=has_next,
        )

    async def replay(self, request: Request) -> Response:
        sink = await self._sink(request)
        params = await read_form(request)
        event_id = (params.get("EventId") or "").strip() or None
        start = _parse_time(params.get("StartTime"), "StartTime")
        end = _parse_time(params.get("EndTime"), "EndTime")
        if start is not None and end is not None and start > end:
            raise invalid("EndTime", "is before StartTime")
        replayed = await self._queue.replay_dead_letters(
            sink.sid, time.time(), event_id=event_id, dead_from=start, dead_until=end
        )
        return json_response({"replayed": replayed})

    async def enable(self, request: Request) -> Response:
        sink = await self._sink(request)
        await read_form(request)  # no parameters, but the body limit still applies
        if sink.status not in ("failed", "active"):
            raise ApiError(
                400,
                INVALID_PARAMETER,
                f"Sink {sink.sid} is {sink.status}: only a failed sink can be re-enabled "
                "(a sink that was never active becomes active through Sink Test and Validate)",
                {"status": sink.status},
            )
        now = time.time()
        if sink.status == "failed":
            try:
                sink = await self._control.set_sink_status(
                    sink.account_sid, sink.sid, "active", now
                )
            except NotFound:
                raise not_found(NOT_FOUND, f"Sink {sink.sid} was not found") from None
        await self._queue.reset_failures(sink.sid, now)
        return json_response(await self._status_of(sink))


def _attempt(attempt: Attempt) -> AttemptResource:
    return AttemptResource(
        time=iso(attempt.time),
        events=attempt.events,
        ok=attempt.ok,
        status=attempt.status,
        error=attempt.error,
        duration_ms=attempt.duration_ms,
    )


def _dead_letter(dead: DeadLetter) -> DeadLetterResource:
    try:
        event = _decoder.decode(dead.body)
    except msgspec.DecodeError:
        event = {}
    if not isinstance(event, dict):
        event = {}
    return DeadLetterResource(
        event_id=dead.event_id,
        type=str(event.get("type", "")),
        enqueued_at=iso(dead.enqueued_at),
        dead_at=iso(dead.dead_at),
        attempts=dead.attempts,
        reason=dead.reason,
        event=event,
    )


def delivery_routes(
    accounts: AccountStore,
    control: ControlStore,
    queue: DeliveryStore,
    base_url: str,
    throttle: ThrottlePolicy,
) -> list[BaseRoute]:
    return DeliveryRoutes(accounts, control, queue, base_url, throttle).routes()
