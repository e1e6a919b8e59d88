"""A live feed of an account's insight events: ``GET /callstream/v1/Events``.

Not a Twilio API: it is how `callstream tail` (and the console) follow events as
the engine produces them, whether or not any sink is subscribed. Long-polls: with
``Wait`` seconds it answers as soon as events past ``After`` exist.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from callstream.api.auth import require_account
from callstream.api.errors import ApiError
from callstream.cloudevents import CloudEvent, to_cloudevent
from callstream.model.catalogue import catalogue
from callstream.model.insights import CallEvent, CallMetric, CallSummary, InsightEvent
from callstream.store.interfaces import AccountStore, EventLog, OutputEvent

INVALID_PARAMETER = 20001
MAX_LIMIT = 1000
MAX_WAIT = 30.0

_encoder = msgspec.json.Encoder()
_decoders: dict[str, msgspec.msgpack.Decoder[Any]] = {
    "VoiceInsights.CallEvent": msgspec.msgpack.Decoder(CallEvent),
    "VoiceInsights.CallMetric": msgspec.msgpack.Decoder(CallMetric),
    "VoiceInsights.CallSummary": msgspec.msgpack.Decoder(CallSummary),
}


def decode_output(event: OutputEvent) -> InsightEvent:
    """The canonical event an events-log entry holds."""
    schema_id = catalogue().event_type(event.type).schema_id
    decoded: InsightEvent = _decoders[schema_id].decode(event.body)
    return decoded


class LiveEvents(msgspec.Struct, frozen=True):
    events: list[CloudEvent]
    next_after: int


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, INVALID_PARAMETER, f"{name} must be an integer") from None
    if not low <= value <= high:
        raise ApiError(400, INVALID_PARAMETER, f"{name} must be between {low} and {high}")
    return value


class LiveRoutes:
    def __init__(self, accounts: AccountStore, events: EventLog, schema_base_url: str) -> None:
        self._accounts = accounts
        self._events = events
        self._schema_base_url = schema_base_url

    async def events(self, request: Request) -> Response:
        account = await require_account(request, self._accounts)
        after = _int_param(request, "After", -1, -1, 2**62)
        limit = _int_param(request, "Limit", 100, 1, MAX_LIMIT)
        wait = float(_int_param(request, "Wait", 0, 0, int(MAX_WAIT)))
        types = set(request.query_params.getlist("Type"))
        unknown = types - {t.type for t in catalogue().types}
        if unknown:
            raise ApiError(400, 91104, f"Unknown event type: {sorted(unknown)[0]}")
        call_sid = request.query_params.get("CallSid")
        if after < 0:
            after = await self._events.last_offset()  # start at the tail, like `tail -f`
        batch = await self._events.read(after, limit, account.sid)
        if not batch and wait > 0:
            await self._events.wait(after, wait)
            batch = await self._events.read(after, limit, account.sid)
        next_after = batch[-1].offset if batch else after
        selected = [
            to_cloudevent(decode_output(entry.event), schema_base_url=self._schema_base_url)
            for entry in batch
            if (not types or entry.event.type in types)
            and (call_sid is None or entry.event.call_sid == call_sid)
        ]
        body = _encoder.encode(LiveEvents(events=selected, next_after=next_after))
        return Response(body, media_type="application/json")
