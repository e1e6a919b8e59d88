"""The queryable store behind the Voice Insights read API, in PostgreSQL (distributed backend).

In the distributed backend the events log is a JetStream stream, which cannot answer "the
summaries of this account, filtered and sorted". So an indexer consumer of the log calls
``index`` with each batch of events, and this store keeps its own copy: every insight event
once (``insight_events``, what the Events and Metrics lists read), the latest summary of each
call with its filter columns (``call_summaries``, ``call_summary_tags``), and the calls that
have events but no summary yet (``call_activity``). The queries and their answers are those of
the embedded store (``store/sqlite/insights.py``); the events log's offset is played by
``insight_events.seq``, which orders events by the order they were indexed in.

``index`` is idempotent: the log is read at least once, so a batch may be indexed again after
a crash, and an event already stored (same account, call, type and identity: the events
log's own identity of an event) is skipped, summaries included. A summary replaces a call's
indexed one only if its processing version is higher, so late or replayed summaries are no-ops.
"""

from __future__ import annotations

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
from callstream.store.postgres.database import Connection, Pool

K = TypeVar("K", bound=tuple[Any, ...])
R = TypeVar("R")


def _types_of(schema_id: str) -> list[str]:
    return sorted(t.type for t in catalogue().types if t.schema_id == schema_id)


_EVENT_TYPES: Final = _types_of(CallEvent.schema_id)
_METRIC_TYPES: Final = _types_of(CallMetric.schema_id)
_SUMMARY_TYPES: Final = frozenset(_types_of(CallSummary.schema_id))
_summary_decoder: Final = msgspec.msgpack.Decoder(CallSummary)

_EVENT_COLUMNS: Final = "seq, account_sid, call_sid, type, identity, time, body"

_INSERT_EVENTS: Final = """
    INSERT INTO insight_events (account_sid, call_sid, type, identity, time, body)
    SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::float8[],
                         %s::bytea[])
    ON CONFLICT (account_sid, call_sid, type, identity) DO NOTHING
    RETURNING seq, account_sid, call_sid, type, identity, time
"""

# A call becomes (or stays) active with new events unless it already has a summary.
_TOUCH_ACTIVITY: Final = """
    INSERT INTO call_activity (account_sid, call_sid, first_time, last_time, last_seq)
    SELECT n.account_sid, n.call_sid, n.first_time, n.last_time, n.last_seq
      FROM unnest(%s::text[], %s::text[], %s::float8[], %s::float8[], %s::bigint[])
           AS n (account_sid, call_sid, first_time, last_time, last_seq)
     WHERE NOT EXISTS (SELECT 1 FROM call_summaries s
                        WHERE s.account_sid = n.account_sid AND s.call_sid = n.call_sid)
    ON CONFLICT (account_sid, call_sid) DO UPDATE
       SET last_time = excluded.last_time, last_seq = excluded.last_seq
     WHERE excluded.last_seq > call_activity.last_seq
"""

_SUMMARY_COLUMNS: Final = (
    "account_sid, call_sid, processing_version, processing_state, event_seq, start_key, "
    "end_key, call_type, call_state, answered_by, direction, from_caller, to_callee, "
    "from_carrier, to_carrier, from_country_code, to_country_code, verified_caller, "
    "abnormal_session, has_tags"
)
_UPSERT_SUMMARY: Final = f"""
    INSERT INTO call_summaries ({_SUMMARY_COLUMNS})
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (account_sid, call_sid) DO UPDATE SET
        {", ".join(f"{c} = excluded.{c}" for c in _SUMMARY_COLUMNS.split(", ")[2:])}
    WHERE excluded.processing_version > call_summaries.processing_version
    RETURNING call_sid
"""


def event_identity_prefix(edge: str) -> str:
    """What every ``CallEvent.identity`` of ``edge`` starts with (``event/<edge>/<seq>``)."""
    return f"event/{edge}/"


def metric_identity_prefix(edge: str, direction: str | None) -> str:
    """What every ``CallMetric.identity`` of ``edge`` (and ``direction``) starts with
    (``metric/<edge>/<direction>/<window start ms>``)."""
    return f"metric/{edge}/" if direction is None else f"metric/{edge}/{direction}/"


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _summary_values(summary: CallSummary, event_seq: int, time: float) -> tuple[Any, ...]:
    """The ``call_summaries`` row of a summary: the same keys and flags as the embedded
    store's index (``store/sqlite/insights.py``), so both backends filter and sort alike."""
    start = _epoch(summary.start_time) or _epoch(summary.created_time)
    start_key = start if start is not None else _epoch(summary.end_time) or time
    end = _epoch(summary.end_time)
    end_key = end if end is not None else start_key
    caller, callee = summary.from_, summary.to
    props, trust = summary.properties, summary.trust
    verified = trust.verified_caller.verified if trust and trust.verified_caller else None
    sip_response = props.last_sip_response_num if props else None
    return (
        summary.account_sid,
        summary.call_sid,
        summary.processing_version,
        summary.processing_state,
        event_seq,
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
        verified,
        # "The last SIP response was not 200 OK" (Twilio's AbnormalSession filter).
        sip_response is not None and sip_response != 200,
        bool(summary.tags),
    )


class PostgresInsightsStore:
    """``InsightsStore`` and ``InsightsIndex`` on PostgreSQL; every query is scoped to one
    account."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    # --- the write side: the indexer consumer of the events log ------------------------------

    async def index(self, events: Sequence[OutputEvent]) -> None:
        if not events:
            return
        bodies = {(e.account_sid, e.call_sid, e.type, e.identity): e.body for e in events}
        async with self._pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                _INSERT_EVENTS,
                (
                    [e.account_sid for e in events],
                    [e.call_sid for e in events],
                    [e.type for e in events],
                    [e.identity for e in events],
                    [e.time for e in events],
                    [e.body for e in events],
                ),
            )
            stored = sorted(await cursor.fetchall())  # only the events new to the store
            if not stored:
                return
            await _touch_activity(conn, stored)
            summarised: set[tuple[str, str]] = set()
            # Calls in key order (then versions in index order): two indexers that share calls
            # lock their rows in the same order, so they wait for each other, not deadlock.
            summaries = sorted((r for r in stored if r[3] in _SUMMARY_TYPES), key=_by_call)
            for seq, account_sid, call_sid, type_, identity, time in summaries:
                summary = _summary_decoder.decode(bodies[account_sid, call_sid, type_, identity])
                cursor = await conn.execute(_UPSERT_SUMMARY, _summary_values(summary, seq, time))
                summarised.add((account_sid, call_sid))
                if await cursor.fetchone() is not None:  # this summary is now the latest
                    await conn.execute(
                        "DELETE FROM call_summary_tags WHERE account_sid = %s AND call_sid = %s",
                        (account_sid, call_sid),
                    )
                    async with conn.cursor() as tags:
                        await tags.executemany(
                            "INSERT INTO call_summary_tags (account_sid, call_sid, tag) "
                            "VALUES (%s, %s, %s)",
                            [(account_sid, call_sid, tag) for tag in summary.tags],
                        )
            if summarised:
                await conn.execute(
                    "DELETE FROM call_activity a USING unnest(%s::text[], %s::text[]) "
                    "AS d (account_sid, call_sid) "
                    "WHERE a.account_sid = d.account_sid AND a.call_sid = d.call_sid",
                    ([a for a, _ in summarised], [c for _, c in summarised]),
                )

    # --- the read side -------------------------------------------------------------------------

    async def has_call(self, account_sid: str, call_sid: str) -> bool:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT 1 FROM insight_events WHERE account_sid = %s AND call_sid = %s LIMIT 1",
                (account_sid, call_sid),
            )
            return await cursor.fetchone() is not None

    async def latest_summary(self, account_sid: str, call_sid: str) -> OutputEvent | None:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT e.account_sid, e.call_sid, e.type, e.identity, e.time, e.body "
                "FROM call_summaries s JOIN insight_events e ON e.seq = s.event_seq "
                "WHERE s.account_sid = %s AND s.call_sid = %s",
                (account_sid, call_sid),
            )
            row = await cursor.fetchone()
        return None if row is None else _output_event(row)

    async def call_events(
        self, account_sid: str, call_sid: str, edge: str | None, window: Window[EventKey]
    ) -> Rows[EventRow]:
        prefix = None if edge is None else event_identity_prefix(edge)
        return await self._call_rows(account_sid, call_sid, _EVENT_TYPES, prefix, None, window)

    async def call_metrics(
        self,
        account_sid: str,
        call_sid: str,
        edge: str | None,
        direction: str | None,
        window: Window[EventKey],
    ) -> Rows[EventRow]:
        if edge is not None:
            prefix = metric_identity_prefix(edge, direction)
            return await self._call_rows(account_sid, call_sid, _METRIC_TYPES, prefix, None, window)
        # Without an edge the direction is the identity's third part: match that part.
        return await self._call_rows(account_sid, call_sid, _METRIC_TYPES, None, direction, window)

    async def _call_rows(
        self,
        account_sid: str,
        call_sid: str,
        types: list[str],
        prefix: str | None,
        direction: str | None,
        window: Window[EventKey],
    ) -> Rows[EventRow]:
        where = ["account_sid = %s", "call_sid = %s", "type = ANY(%s)"]
        params: list[Any] = [account_sid, call_sid, types]
        if prefix is not None:
            # starts_with, not LIKE: "_" in edge names is a LIKE wildcard.
            where.append("starts_with(identity, %s)")
            params.append(prefix)
        if direction is not None:
            where.append("split_part(identity, '/', 3) = %s")
            params.append(direction)

        def row(values: Sequence[Any]) -> EventRow:
            event = _output_event(values[1:])
            return EventRow((event.time, int(values[0])), event)

        select = f"SELECT {_EVENT_COLUMNS} FROM insight_events"
        query = _Keyset(("time", "seq"), descending=False)
        async with self._pool.connection() as conn:
            return await query.read(conn, select, where, params, window, row)

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
            "e.body FROM call_summaries s JOIN insight_events e ON e.seq = s.event_seq"
        )

        def row(values: Sequence[Any]) -> SummaryRow:
            event = _output_event(values[1:])
            return SummaryRow((float(values[0]), event.call_sid), event)

        async with self._pool.connection() as conn:
            return await query.read(conn, select, conditions, params, window, row)

    async def active_calls(self, account_sid: str, limit: int) -> ActiveCalls:
        # A row whose call got its summary from a concurrent indexer transaction may linger in
        # call_activity; the summary check keeps it out of the answer all the same.
        live = (
            "FROM call_activity a WHERE a.account_sid = %s AND NOT EXISTS "
            "(SELECT 1 FROM call_summaries s "
            "WHERE s.account_sid = a.account_sid AND s.call_sid = a.call_sid)"
        )
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cursor = await conn.execute(f"SELECT count(*) {live}", (account_sid,))
            counted = await cursor.fetchone()
            cursor = await conn.execute(
                f"SELECT a.call_sid, a.first_time, a.last_time {live} "
                "ORDER BY a.last_seq DESC LIMIT %s",
                (account_sid, limit),
            )
            rows = await cursor.fetchall()
        calls = [ActiveCall(str(sid), float(first), float(last)) for sid, first, last in rows]
        return ActiveCalls(total=0 if counted is None else int(counted[0]), calls=calls)


def _by_call(row: Sequence[Any]) -> tuple[str, str, int]:
    return (row[1], row[2], row[0])


def _output_event(values: Sequence[Any]) -> OutputEvent:
    account_sid, call_sid, type_, identity, time, body = values
    return OutputEvent(account_sid, call_sid, type_, identity, float(time), bytes(body))


async def _touch_activity(conn: Connection, stored: Sequence[Sequence[Any]]) -> None:
    """Record new events' calls as active: first and latest event of each call by ``seq``
    (``stored`` is in ``seq`` order)."""
    calls: dict[tuple[str, str], list[Any]] = {}
    for seq, account_sid, call_sid, _type, _identity, time in stored:
        seen = calls.get((account_sid, call_sid))
        if seen is None:
            calls[account_sid, call_sid] = [time, time, seq]
        else:
            seen[1], seen[2] = time, seq
    keys = sorted(calls)  # a stable lock order, as for summaries
    await conn.execute(
        _TOUCH_ACTIVITY,
        (
            [a for a, _ in keys],
            [c for _, c in keys],
            [calls[k][0] for k in keys],
            [calls[k][1] for k in keys],
            [calls[k][2] for k in keys],
        ),
    )


def _summary_conditions(account_sid: str, f: SummaryFilter) -> tuple[list[str], list[Any]]:
    where = ["s.account_sid = %s"]
    params: list[Any] = [account_sid]

    def equal(column: str, value: str | bool | None) -> None:
        if value is not None:
            where.append(f"s.{column} = %s")
            params.append(value)

    def one_of(column: str, values: frozenset[str]) -> None:
        if values:
            where.append(f"s.{column} = ANY(%s)")
            params.append(sorted(values))

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
    equal("has_tags", f.has_tag)
    equal("verified_caller", f.verified_caller)
    equal("abnormal_session", f.abnormal_session)
    for tag in sorted(f.tags):
        where.append(
            "EXISTS (SELECT 1 FROM call_summary_tags t WHERE t.account_sid = s.account_sid "
            "AND t.call_sid = s.call_sid AND t.tag = %s)"
        )
        params.append(tag)
    if f.started_from is not None:
        where.append("s.start_key >= %s")
        params.append(f.started_from)
    if f.started_before is not None:
        where.append("s.start_key < %s")
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

    async def read(
        self,
        conn: Connection,
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
            conditions.append(f"({first}, {second}) {operator} (%s, %s)")
            values += list(position.key)
        order = "DESC" if towards_smaller else "ASC"
        sql = (
            f"{select} WHERE {' AND '.join(conditions)} "
            f"ORDER BY {first} {order}, {second} {order} LIMIT %s"
        )
        cursor = await conn.execute(sql, (*values, window.limit + 1))
        rows = await cursor.fetchall()
        more = len(rows) > window.limit
        page = [build(values_) for values_ in rows[: window.limit]]
        if backwards:
            page.reverse()
        return Rows(page, more)
