"""The queryable store behind the Voice Insights read API (embedded backend).

Call events and metric records are read straight from the ``events`` table (index
``events_by_call``): a call holds a few thousand at most, so filtering and ordering one
call's rows is cheap and needs no copy. Summaries are listed across calls, so the latest
summary of each call is indexed in ``call_summaries`` (migration 0003) by ``index_events``,
which the engine's commit calls in the same transaction that stores the events: the index
is never behind the events log, and a replayed commit indexes nothing twice.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final, TypeVar

import msgspec

from callstream.model.catalogue import catalogue
from callstream.model.insights import CallEvent, CallMetric, CallSummary
from callstream.store.insights import (
    ActiveCall,
    ActiveCalls,
    EventKey,
    EventRow,
    Rows,
    SummaryFilter,
    SummaryKey,
    SummaryRow,
    SummarySort,
    Window,
)
from callstream.store.interfaces import OutputEvent
from callstream.store.sqlite.database import Database

K = TypeVar("K", bound=tuple[Any, ...])
R = TypeVar("R")


def _types_of(schema_id: str) -> tuple[str, ...]:
    return tuple(sorted(t.type for t in catalogue().types if t.schema_id == schema_id))


_EVENT_TYPES: Final = _types_of(CallEvent.schema_id)
_METRIC_TYPES: Final = _types_of(CallMetric.schema_id)
_SUMMARY_TYPES: Final = frozenset(_types_of(CallSummary.schema_id))
_summary_decoder: Final = msgspec.msgpack.Decoder(CallSummary)

_EVENT_COLUMNS: Final = "offset, account_sid, call_sid, type, identity, time, body"


def event_identity_prefix(edge: str) -> str:
    """What every ``CallEvent.identity`` of ``edge`` starts with (``event/<edge>/<seq>``)."""
    return f"event/{edge}/"


def metric_identity_prefix(edge: str, direction: str | None) -> str:
    """What every ``CallMetric.identity`` of ``edge`` (and ``direction``) starts with
    (``metric/<edge>/<direction>/<window start ms>``)."""
    return f"metric/{edge}/" if direction is None else f"metric/{edge}/{direction}/"


# --- the write side: called inside the engine's commit ------------------------------------------


def index_events(conn: sqlite3.Connection, events: Sequence[OutputEvent]) -> None:
    """Index what the read API queries, in the transaction that stores the events.

    Only summaries are decoded (a handful per call, against thousands of events and metric
    records), so the engine's write path stays cheap. A summary replaces the indexed one
    only if its processing version is higher: replays and out-of-order commits are no-ops.
    """
    for event in events:
        if event.type in _SUMMARY_TYPES:
            _index_summary(conn, event)


def _index_summary(conn: sqlite3.Connection, event: OutputEvent) -> None:
    summary = _summary_decoder.decode(event.body)
    row = conn.execute(
        "SELECT offset FROM events "
        "WHERE account_sid = ? AND call_sid = ? AND type = ? AND identity = ?",
        (event.account_sid, event.call_sid, event.type, event.identity),
    ).fetchone()
    if row is None:  # not stored (cannot happen after the engine's insert; be safe)
        return
    start = _epoch(summary.start_time) or _epoch(summary.created_time)
    start_key = start if start is not None else _epoch(summary.end_time) or event.time
    end = _epoch(summary.end_time)
    end_key = end if end is not None else start_key
    caller, callee = summary.from_, summary.to
    props, trust = summary.properties, summary.trust
    verified = trust.verified_caller.verified if trust and trust.verified_caller else None
    sip_response = props.last_sip_response_num if props else None
    changed = conn.execute(
        "INSERT INTO call_summaries VALUES "
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (account_sid, call_sid) DO UPDATE SET "
        "processing_version = excluded.processing_version, "
        "processing_state = excluded.processing_state, event_offset = excluded.event_offset, "
        "start_key = excluded.start_key, end_key = excluded.end_key, "
        "call_type = excluded.call_type, call_state = excluded.call_state, "
        "answered_by = excluded.answered_by, direction = excluded.direction, "
        "from_caller = excluded.from_caller, to_callee = excluded.to_callee, "
        "from_carrier = excluded.from_carrier, to_carrier = excluded.to_carrier, "
        "from_country_code = excluded.from_country_code, "
        "to_country_code = excluded.to_country_code, "
        "verified_caller = excluded.verified_caller, "
        "abnormal_session = excluded.abnormal_session, has_tags = excluded.has_tags "
        "WHERE excluded.processing_version > call_summaries.processing_version",
        (
            summary.account_sid,
            summary.call_sid,
            summary.processing_version,
            summary.processing_state,
            int(row[0]),
            start_key,
            end_key,
            summary.call_type,
            summary.call_state,
            summary.answered_by,
            props.direction if props else None,
            caller.caller if caller else None,
            callee.callee if callee else None,
            caller.carrier if caller else None,
            callee.carrier if callee else None,
            caller.country_code if caller else None,
            callee.country_code if callee else None,
            None if verified is None else int(verified),
            # "The last SIP response was not 200 OK" (Twilio's AbnormalSession filter).
            int(sip_response is not None and sip_response != 200),
            int(bool(summary.tags)),
        ),
    ).rowcount
    if changed:
        conn.execute(
            "DELETE FROM call_summary_tags WHERE account_sid = ? AND call_sid = ?",
            (summary.account_sid, summary.call_sid),
        )
        conn.executemany(
            "INSERT INTO call_summary_tags VALUES (?, ?, ?)",
            [(summary.account_sid, summary.call_sid, tag) for tag in summary.tags],
        )


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


# --- the read side -------------------------------------------------------------------------------


class SqliteInsightsStore:
    """``InsightsStore`` on the embedded database; every query is scoped to one account."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def has_call(self, account_sid: str, call_sid: str) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT 1 FROM events WHERE account_sid = ? AND call_sid = ? LIMIT 1",
                (account_sid, call_sid),
            ).fetchone()
            return row is not None

        return await self._db.read(job)

    async def latest_summary(self, account_sid: str, call_sid: str) -> OutputEvent | None:
        def job(conn: sqlite3.Connection) -> OutputEvent | None:
            row = conn.execute(
                "SELECT e.account_sid, e.call_sid, e.type, e.identity, e.time, e.body "
                "FROM call_summaries s JOIN events e ON e.offset = s.event_offset "
                "WHERE s.account_sid = ? AND s.call_sid = ?",
                (account_sid, call_sid),
            ).fetchone()
            return None if row is None else OutputEvent(*row)

        return await self._db.read(job)

    async def call_events(
        self, account_sid: str, call_sid: str, edge: str | None, window: Window[EventKey]
    ) -> Rows[EventRow]:
        prefix = None if edge is None else event_identity_prefix(edge)
        return await self._call_rows(account_sid, call_sid, _EVENT_TYPES, prefix, window)

    async def call_metrics(
        self,
        account_sid: str,
        call_sid: str,
        edge: str | None,
        direction: str | None,
        window: Window[EventKey],
    ) -> Rows[EventRow]:
        if edge is not None:
            prefix: str | None = metric_identity_prefix(edge, direction)
            return await self._call_rows(account_sid, call_sid, _METRIC_TYPES, prefix, window)
        # Without an edge the direction sits in the middle of the identity: match that part.
        extra = None if direction is None else ("identity GLOB ?", f"metric/*/{direction}/*")
        return await self._call_rows(account_sid, call_sid, _METRIC_TYPES, None, window, extra)

    async def _call_rows(
        self,
        account_sid: str,
        call_sid: str,
        types: tuple[str, ...],
        prefix: str | None,
        window: Window[EventKey],
        extra: tuple[str, str] | None = None,
    ) -> Rows[EventRow]:
        where = [
            "account_sid = ?",
            "call_sid = ?",
            f"type IN ({', '.join('?' * len(types))})",
        ]
        params: list[Any] = [account_sid, call_sid, *types]
        if prefix is not None:
            # substr, not LIKE: "_" in edge names is a LIKE wildcard.
            where.append("substr(identity, 1, ?) = ?")
            params += [len(prefix), prefix]
        if extra is not None:
            where.append(extra[0])
            params.append(extra[1])
        query = _Keyset(("time", "offset"), descending=False)

        def row(values: Sequence[Any]) -> EventRow:
            event = OutputEvent(*values[1:])
            return EventRow((event.time, int(values[0])), event)

        select = f"SELECT {_EVENT_COLUMNS} FROM events"

        def job(conn: sqlite3.Connection) -> Rows[EventRow]:
            return query.read(conn, select, where, params, window, row)

        return await self._db.read(job)

    async def summaries(
        self,
        account_sid: str,
        where: SummaryFilter,
        sort: SummarySort,
        window: Window[SummaryKey],
    ) -> Rows[SummaryRow]:
        conditions, params = _summary_conditions(account_sid, where)
        sort_column = "s.start_key" if sort == "start_time" else "s.end_key"
        query = _Keyset((sort_column, "s.call_sid"), descending=True)
        select = (
            f"SELECT {sort_column}, e.account_sid, e.call_sid, e.type, e.identity, e.time, "
            "e.body FROM call_summaries s JOIN events e ON e.offset = s.event_offset"
        )

        def row(values: Sequence[Any]) -> SummaryRow:
            event = OutputEvent(*values[1:])
            return SummaryRow((float(values[0]), event.call_sid), event)

        def job(conn: sqlite3.Connection) -> Rows[SummaryRow]:
            return query.read(conn, select, conditions, params, window, row)

        return await self._db.read(job)

    async def active_calls(self, account_sid: str, limit: int) -> ActiveCalls:
        return await self._db.read(lambda conn: _active_calls(conn, account_sid, limit))


# A call is active while the engine holds its state (table ``calls``, one row per call, so
# this scans calls rather than events) and no summary has been indexed for it. Its first and
# latest events are found by offset through ``events_by_call``: two index probes per call.
_ACTIVE_CALLS: Final = """
    SELECT c.call_sid,
           (SELECT min(e.offset) FROM events e
             WHERE e.account_sid = c.account_sid AND e.call_sid = c.call_sid) AS first,
           (SELECT max(e.offset) FROM events e
             WHERE e.account_sid = c.account_sid AND e.call_sid = c.call_sid) AS last
      FROM calls c
     WHERE c.account_sid = ?
       AND NOT EXISTS (SELECT 1 FROM call_summaries s
                        WHERE s.account_sid = c.account_sid AND s.call_sid = c.call_sid)
"""


def _active_calls(conn: sqlite3.Connection, account_sid: str, limit: int) -> ActiveCalls:
    rows = conn.execute(
        f"SELECT a.call_sid, f.time, l.time FROM ({_ACTIVE_CALLS}) a "
        "JOIN events f ON f.offset = a.first JOIN events l ON l.offset = a.last "
        "ORDER BY a.last DESC",
        (account_sid,),
    ).fetchall()
    calls = [ActiveCall(str(sid), float(first), float(last)) for sid, first, last in rows[:limit]]
    return ActiveCalls(total=len(rows), calls=calls)


def _summary_conditions(account_sid: str, f: SummaryFilter) -> tuple[list[str], list[Any]]:
    where = ["s.account_sid = ?"]
    params: list[Any] = [account_sid]

    def equal(column: str, value: str | None) -> None:
        if value is not None:
            where.append(f"s.{column} = ?")
            params.append(value)

    def one_of(column: str, values: frozenset[str]) -> None:
        if values:
            where.append(f"s.{column} IN ({', '.join('?' * len(values))})")
            params.extend(sorted(values))

    def flag(column: str, value: bool | None) -> None:
        if value is not None:
            where.append(f"s.{column} = ?")
            params.append(int(value))

    equal("from_caller", f.caller)
    equal("to_callee", f.callee)
    equal("from_carrier", f.from_carrier)
    equal("to_carrier", f.to_carrier)
    equal("from_country_code", f.from_country_code)
    equal("to_country_code", f.to_country_code)
    one_of("call_type", f.call_types)
    one_of("call_state", f.call_states)
    one_of("direction", f.directions)
    one_of("answered_by", f.answered_by)
    one_of("processing_state", frozenset(f.processing_states))
    flag("has_tags", f.has_tag)
    flag("verified_caller", f.verified_caller)
    flag("abnormal_session", f.abnormal_session)
    for tag in sorted(f.tags):
        where.append(
            "EXISTS (SELECT 1 FROM call_summary_tags t WHERE t.account_sid = s.account_sid "
            "AND t.call_sid = s.call_sid AND t.tag = ?)"
        )
        params.append(tag)
    if f.started_from is not None:
        where.append("s.start_key >= ?")
        params.append(f.started_from)
    if f.started_before is not None:
        where.append("s.start_key < ?")
        params.append(f.started_before)
    return where, params


class _Keyset:
    """One page of a list ordered by a two-column key, from a position given as a key.

    Reading backwards (``before``) runs the query in reverse order and flips the rows, so
    a previous page is as cheap as a next one.
    """

    def __init__(self, columns: tuple[str, str], *, descending: bool) -> None:
        self._columns = columns
        self._descending = descending

    def read(
        self,
        conn: sqlite3.Connection,
        select: str,
        where: list[str],
        params: list[Any],
        window: Window[K],
        build: Callable[[Sequence[Any]], R],
    ) -> Rows[R]:
        first, second = self._columns
        position = window.position
        backwards = position is not None and position.direction == "before"
        # Reading forwards in a descending list walks towards smaller keys, and so on.
        towards_smaller = self._descending != backwards
        conditions = list(where)
        values = list(params)
        if position is not None:
            operator = "<" if towards_smaller else ">"
            conditions.append(f"({first}, {second}) {operator} (?, ?)")
            values += list(position.key)
        order = "DESC" if towards_smaller else "ASC"
        sql = (
            f"{select} WHERE {' AND '.join(conditions)} "
            f"ORDER BY {first} {order}, {second} {order} LIMIT ?"
        )
        rows = conn.execute(sql, (*values, window.limit + 1)).fetchall()
        more = len(rows) > window.limit
        page = [build(values_) for values_ in rows[: window.limit]]
        if backwards:
            page.reverse()
        return Rows(page, more)
