"""The Voice Insights v1 read API, on the paths and in the shapes of insights.twilio.com.

| route | twilio-python (``client.insights.v1``) |
|---|---|
| ``GET /v1/Voice/Summaries`` | ``call_summaries.list(...)`` |
| ``GET /v1/Voice/{CallSid}`` | ``calls(sid).fetch()`` |
| ``GET /v1/Voice/{CallSid}/Summary`` | ``calls(sid).summary().fetch(processing_state=...)`` |
| ``GET /v1/Voice/{CallSid}/Events`` | ``calls(sid).events.list(edge=...)`` |
| ``GET /v1/Voice/{CallSid}/Metrics`` | ``calls(sid).metrics.list(edge=..., direction=...)`` |

Bodies are the latest stream schema versions with the REST differences of the reference
(voice-insights-model.md §2.1, §3.1, §4.1): events are ``CallEvent/3`` data, metric records
``CallMetric/2`` data, and a summary is ``CallSummary/2`` data less the stream-only members
(``parent_*``, ``processing_version``) plus the REST-only ones (``answered_by``, ``url``,
``annotation``). So a summary read here and one received from a sink say the same thing.

Every request is scoped to the authenticated account: another account's call is a 404, as
an unknown one is. Query parameters are checked: a misspelt or unsupported filter is a 400
that names it, because silently ignoring a filter returns wrong answers that look right.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, cast, get_args

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from callstream.api.auth import require_account
from callstream.api.errors import ApiError
from callstream.api.live import decode_output
from callstream.api.pagination import PageRequest, SortKey, page_meta, read_page
from callstream.model.insights import (
    EDGES,
    AnsweredBy,
    CallDirection,
    CallEvent,
    CallMetric,
    CallState,
    CallSummary,
    CallTag,
    CallType,
    Direction,
)
from callstream.schemas.render import call_event_v3, call_metric_v2, call_summary_v2
from callstream.store.insights import (
    EventRow,
    InsightsStore,
    Position,
    Rows,
    SummaryFilter,
    SummaryKey,
    SummaryRow,
    SummarySort,
    SummaryState,
    Window,
)
from callstream.store.interfaces import AccountStore, OutputEvent

__all__ = ["SUMMARIES_FILTERS", "UNSUPPORTED_TWILIO_FILTERS", "voice_insights_routes"]

INVALID_PARAMETER: Final = 20001
NOT_FOUND: Final = 20404

_CALL_SID: Final = re.compile(r"CA[0-9a-fA-F]{32}")
_PAGING: Final = frozenset({"PageSize", "Page", "PageToken"})
_RELATIVE: Final = re.compile(r"(\d{1,6})([smhdw])")
_UNIT: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_TRUE_FALSE: Final = {"true": True, "false": False}

SUMMARY_STATES: Final = ("complete", "partial", "all")
# The list's ProcessingState spells "completed" (OAI); "complete" is accepted as well, so the
# single summary's spelling works here too. "started" (assembly has started, not finished)
# is what callstream calls partial.
LIST_STATES: Final[Mapping[str, frozenset[SummaryState]]] = {
    "completed": frozenset({"complete"}),
    "complete": frozenset({"complete"}),
    "started": frozenset({"partial"}),
    "partial": frozenset({"partial"}),
    "all": frozenset(),
}
SORTS: Final = get_args(SummarySort)

SUMMARIES_FILTERS: Final = (
    "From",
    "To",
    "FromCarrier",
    "ToCarrier",
    "FromCountryCode",
    "ToCountryCode",
    "VerifiedCaller",
    "HasTag",
    "Tags",
    "StartTime",
    "EndTime",
    "CallType",
    "CallState",
    "Direction",
    "AnsweredBy",
    "AbnormalSession",
    "ProcessingState",
    "SortBy",
)
"""The Summaries list parameters callstream applies (``Tags`` is callstream's own)."""

UNSUPPORTED_TWILIO_FILTERS: Final = (
    "Subaccount",
    "AnsweredByAnnotation",
    "ConnectivityIssueAnnotation",
    "QualityIssueAnnotation",
    "SpamAnnotation",
    "CallScoreAnnotation",
    "BrandedEnabled",
    "VoiceIntegrityEnabled",
    "BrandedBundleSid",
    "BrandedLogo",
    "BrandedType",
    "BrandedUseCase",
    "BrandedCallReason",
    "VoiceIntegrityBundleSid",
    "VoiceIntegrityUseCase",
    "BusinessProfileIdentity",
    "BusinessProfileIndustry",
    "BusinessProfileBundleSid",
    "BusinessProfileType",
)
"""Twilio filters over data callstream does not hold (subaccounts, annotations, Branded
Calls, Voice Integrity, Business Profiles): refused by name rather than ignored."""

_encoder: Final = msgspec.json.Encoder()


# --- query parameters ----------------------------------------------------------------------------


def _bad(message: str, **details: Any) -> ApiError:
    return ApiError(400, INVALID_PARAMETER, message, details or None)


def _not_found(request: Request) -> ApiError:
    return ApiError(404, NOT_FOUND, f"The requested resource {request.url.path} was not found")


def _params(request: Request, allowed: Collection[str]) -> dict[str, str]:
    """The request's filters: each known and given once (400 naming the parameter otherwise).

    Empty values count as not given, as they do for the paging parameters.
    """
    found: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in request.query_params.multi_items():
        if name in seen:
            raise _bad(f"{name} may be given only once", parameter=name)
        seen.add(name)
        if name in _PAGING:
            continue
        if name not in allowed:
            supported = sorted(allowed)
            if name in UNSUPPORTED_TWILIO_FILTERS:
                raise _bad(
                    f"{name} is not supported by callstream, which keeps no data for it",
                    parameter=name,
                    supported=supported,
                )
            raise _bad(f"Unknown parameter {name}", parameter=name, supported=supported)
        if value != "":
            found[name] = value
    return found


def _choice(params: Mapping[str, str], name: str, allowed: Collection[str]) -> str | None:
    value = params.get(name)
    if value is not None and value not in allowed:
        raise _bad(f"{name} must be one of {', '.join(allowed)}, not {value!r}", parameter=name)
    return value


def _choices(params: Mapping[str, str], name: str, allowed: Collection[str]) -> frozenset[str]:
    """A comma-separated list of enum values (any of them matches)."""
    raw = params.get(name)
    if raw is None:
        return frozenset()
    values = frozenset(part.strip() for part in raw.split(","))
    wrong = sorted(values - set(allowed))
    if wrong:
        raise _bad(
            f"{name} takes a comma-separated list of {', '.join(allowed)}, not {wrong[0]!r}",
            parameter=name,
        )
    return values


def _flag(params: Mapping[str, str], name: str) -> bool | None:
    raw = params.get(name)
    if raw is None:
        return None
    value = _TRUE_FALSE.get(raw.lower())
    if value is None:
        raise _bad(f"{name} must be true or false, not {raw!r}", parameter=name)
    return value


def parse_moment(raw: str, now: float) -> float:
    """Unix seconds from Twilio's time filter forms: ``30m``, ``4h``, ``3d``, ``1w`` (that
    long before ``now``; ``s`` works too) or an ISO 8601 date or date-time (UTC unless it
    carries an offset)."""
    relative = _RELATIVE.fullmatch(raw)
    if relative is not None:
        return now - int(relative.group(1)) * _UNIT[relative.group(2)]
    moment = datetime.fromisoformat(raw)  # ValueError for anything else
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _moment(params: Mapping[str, str], name: str, now: float) -> float | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        return parse_moment(raw, now)
    except (ValueError, OverflowError):
        raise _bad(
            f"{name} must be a duration before now (30m, 4h, 3d, 1w) or an ISO 8601 "
            f"date-time, not {raw!r}",
            parameter=name,
        ) from None


def _summary_filter(params: Mapping[str, str], now: float) -> SummaryFilter:
    started_from = _moment(params, "StartTime", now)
    started_before = _moment(params, "EndTime", now)
    if started_from is not None and started_before is not None and started_from > started_before:
        raise _bad("StartTime is later than EndTime", parameter="StartTime")
    state = _choice(params, "ProcessingState", tuple(LIST_STATES)) or "all"
    country = {
        name: value.upper() if (value := params.get(name)) is not None else None
        for name in ("FromCountryCode", "ToCountryCode")
    }
    return SummaryFilter(
        caller=params.get("From"),
        callee=params.get("To"),
        from_carrier=params.get("FromCarrier"),
        to_carrier=params.get("ToCarrier"),
        from_country_code=country["FromCountryCode"],
        to_country_code=country["ToCountryCode"],
        call_types=_choices(params, "CallType", get_args(CallType)),
        call_states=_choices(params, "CallState", get_args(CallState)),
        directions=_choices(params, "Direction", get_args(CallDirection)),
        answered_by=_choices(params, "AnsweredBy", get_args(AnsweredBy)),
        processing_states=LIST_STATES[state],
        has_tag=_flag(params, "HasTag"),
        tags=_choices(params, "Tags", get_args(CallTag)),
        verified_caller=_flag(params, "VerifiedCaller"),
        abnormal_session=_flag(params, "AbnormalSession"),
        started_from=started_from,
        started_before=started_before,
    )


# --- page tokens ---------------------------------------------------------------------------------


def _window(page: PageRequest, tie_breaker: type[int] | type[str]) -> Window[Any]:
    """The store window of a page request; a token's key must be one of this list's keys:
    a finite time, and an events-log offset (a 64-bit integer) or a call SID."""
    if page.direction is None or page.key is None:
        return Window(page.size)
    key = page.key
    if len(key) == 2 and not any(isinstance(part, bool) for part in key):
        moment, tie = key
        try:
            moment = float(moment) if isinstance(moment, int | float) else math.nan
        except OverflowError:  # an integer too large for a float
            moment = math.nan
        in_range = not isinstance(tie, int) or -(2**63) <= tie < 2**63
        if math.isfinite(moment) and isinstance(tie, tie_breaker) and in_range:
            return Window(page.size, Position(page.direction, (moment, tie)))
    raise _bad("PageToken is not a valid page token for this list", parameter="PageToken")


def _list_body(
    request: Request,
    base_url: str,
    list_key: str,
    page: PageRequest,
    rows: Rows[EventRow] | Rows[SummaryRow],
    records: list[dict[str, Any]],
    filters: Mapping[str, str],
) -> Response:
    found = rows.rows
    backwards = page.direction == "before"
    first: SortKey | None = list(found[0].key) if found else None
    last: SortKey | None = list(found[-1].key) if found else None
    meta = page_meta(
        request,
        base_url,
        list_key,
        page,
        first_key=first,
        last_key=last,
        # Reading backwards, the page this one was reached from lies after it.
        has_next=bool(found) if backwards else rows.more,
        filters=dict(filters),
    )
    return _json({list_key: records, "meta": meta})


def _json(body: dict[str, Any]) -> Response:
    return Response(_encoder.encode(body), media_type="application/json")


# --- rendering -----------------------------------------------------------------------------------


def summary_json(summary: CallSummary, base_url: str) -> dict[str, Any]:
    """The REST ``insights.v1.call.summary`` of a canonical summary (see the module doc)."""
    stream = call_summary_v2(summary)
    return {
        "account_sid": summary.account_sid,
        "call_sid": summary.call_sid,
        "call_type": summary.call_type,
        "call_state": summary.call_state,
        "answered_by": summary.answered_by,
        "processing_state": summary.processing_state,
        "created_time": stream["created_time"],
        "start_time": stream["start_time"],
        "end_time": stream["end_time"],
        "duration": stream["duration"],
        "connect_duration": stream["connect_duration"],
        "from": stream["from"],
        "to": stream["to"],
        "carrier_edge": stream["carrier_edge"],
        "client_edge": stream["client_edge"],
        "sdk_edge": stream["sdk_edge"],
        "sip_edge": stream["sip_edge"],
        "tags": stream["tags"],
        "url": f"{base_url}/v1/Voice/{summary.call_sid}/Summary",
        "attributes": stream["attributes"],
        "properties": stream["properties"],
        "trust": stream["trust"],
        # Annotations are written through Twilio's Annotation resource, which callstream
        # does not have: there is never one to show.
        "annotation": None,
    }


def _decode_summary(stored: OutputEvent) -> CallSummary:
    summary = decode_output(stored)
    assert isinstance(summary, CallSummary)
    return summary


def _event_json(row: EventRow) -> dict[str, Any]:
    event = decode_output(row.event)
    assert isinstance(event, CallEvent)
    return call_event_v3(event)


def _metric_json(row: EventRow) -> dict[str, Any]:
    metric = decode_output(row.event)
    assert isinstance(metric, CallMetric)
    return call_metric_v2(metric)


# --- routes --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _CallRequest:
    account_sid: str
    call_sid: str
    params: dict[str, str]


class VoiceInsightsRoutes:
    """The handlers, bound to the stores they read."""

    def __init__(self, accounts: AccountStore, store: InsightsStore, base_url: str) -> None:
        self._accounts = accounts
        self._store = store
        self._base_url = base_url.rstrip("/")

    async def _call(self, request: Request, allowed: Collection[str]) -> _CallRequest:
        """A per-call request, checked in Twilio's order: credentials (401), then
        parameters (400), then whether the account has the call (404)."""
        account = await require_account(request, self._accounts)
        params = _params(request, allowed)
        call_sid = str(request.path_params["call_sid"])
        if _CALL_SID.fullmatch(call_sid) is None:
            raise _not_found(request)
        if not await self._store.has_call(account.sid, call_sid):
            raise _not_found(request)
        return _CallRequest(account.sid, call_sid, params)

    async def call(self, request: Request) -> Response:
        call = await self._call(request, ())
        base = f"{self._base_url}/v1/Voice/{call.call_sid}"
        links = {name: f"{base}/{name.title()}" for name in ("events", "metrics", "summary")}
        return _json({"sid": call.call_sid, "url": base, "links": links})

    async def summary(self, request: Request) -> Response:
        call = await self._call(request, ("ProcessingState",))
        state = _choice(call.params, "ProcessingState", SUMMARY_STATES)
        stored = await self._store.latest_summary(call.account_sid, call.call_sid)
        if stored is None:
            raise ApiError(
                404,
                NOT_FOUND,
                f"Call {call.call_sid} has no summary yet (the call may not have ended)",
            )
        summary = _decode_summary(stored)
        # Once complete, a call gets no further summary: the latest is the complete one.
        if state == "complete" and summary.processing_state != "complete":
            raise ApiError(
                404,
                NOT_FOUND,
                f"Call {call.call_sid} has no complete summary yet; "
                "ProcessingState=partial returns the latest partial one",
            )
        return _json(summary_json(summary, self._base_url))

    async def events(self, request: Request) -> Response:
        call = await self._call(request, ("Edge",))
        edge = _choice(call.params, "Edge", EDGES)
        page = read_page(request)
        rows = await self._store.call_events(
            call.account_sid, call.call_sid, edge, _window(page, int)
        )
        records = [_event_json(row) for row in rows.rows]
        return _list_body(request, self._base_url, "events", page, rows, records, call.params)

    async def metrics(self, request: Request) -> Response:
        call = await self._call(request, ("Edge", "Direction"))
        edge = _choice(call.params, "Edge", EDGES)
        direction = _choice(call.params, "Direction", get_args(Direction))
        page = read_page(request)
        rows = await self._store.call_metrics(
            call.account_sid, call.call_sid, edge, direction, _window(page, int)
        )
        records = [_metric_json(row) for row in rows.rows]
        return _list_body(request, self._base_url, "metrics", page, rows, records, call.params)

    async def summaries(self, request: Request) -> Response:
        account = await require_account(request, self._accounts)
        params = _params(request, SUMMARIES_FILTERS)
        where = _summary_filter(params, time.time())
        sort = cast(SummarySort, _choice(params, "SortBy", SORTS) or "start_time")
        page = read_page(request)
        window: Window[SummaryKey] = _window(page, str)
        rows = await self._store.summaries(account.sid, where, sort, window)
        records = [summary_json(_decode_summary(row.event), self._base_url) for row in rows.rows]
        return _list_body(request, self._base_url, "call_summaries", page, rows, records, params)

    def routes(self) -> list[BaseRoute]:
        # Summaries before {call_sid}: "Summaries" would otherwise be taken for a call SID.
        return [
            Route("/v1/Voice/Summaries", self.summaries, methods=["GET"]),
            Route("/v1/Voice/{call_sid}", self.call, methods=["GET"]),
            Route("/v1/Voice/{call_sid}/Summary", self.summary, methods=["GET"]),
            Route("/v1/Voice/{call_sid}/Events", self.events, methods=["GET"]),
            Route("/v1/Voice/{call_sid}/Metrics", self.metrics, methods=["GET"]),
        ]


def voice_insights_routes(
    accounts: AccountStore, store: InsightsStore, base_url: str
) -> list[BaseRoute]:
    """The Voice Insights v1 routes, ready for the application's route list."""
    return VoiceInsightsRoutes(accounts, store, base_url).routes()
