"""The distributed backend's delivery bookkeeping in PostgreSQL (migration 0002_delivery).

The per-sink queues are JetStream's (``store/nats/delivery.py``, which uses this ledger);
what operators query and what must change together is here: the router's cursor, per-sink
counters and health, the bounded attempt log, dead letters (paged, replayed) and the failed
attempts of items waiting for a retry. Each method is one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from callstream.store.delivery import Attempt, AttemptResult, DeadLetter, SinkStats
from callstream.store.postgres.database import Connection, Pool

_STATS_COLUMNS = (
    "sink_sid, delivered, failed, retried, dead_lettered, consecutive_failures, last_error, "
    "last_error_at, last_success_at, throttled_rate"
)
_DEAD_COLUMNS = "id, account_sid, sink_sid, event_id, body, enqueued_at, dead_at, attempts, reason"


def _dead_letter(row: Sequence[Any]) -> DeadLetter:
    return DeadLetter(
        id=int(row[0]),
        account_sid=row[1],
        sink_sid=row[2],
        event_id=row[3],
        body=bytes(row[4]),
        enqueued_at=row[5],
        dead_at=row[6],
        attempts=row[7],
        reason=row[8],
    )


async def _add_count(conn: Connection, sink_sid: str, column: str, amount: int) -> None:
    # Only for sinks that exist: a sink deleted meanwhile keeps no statistics.
    await conn.execute(
        f"INSERT INTO delivery_sink_stats (sink_sid, {column}) "
        f"SELECT %s, %s WHERE EXISTS (SELECT 1 FROM sinks WHERE sid = %s) "
        f"ON CONFLICT (sink_sid) DO UPDATE SET {column} = delivery_sink_stats.{column} "
        f"+ excluded.{column}",
        (sink_sid, amount, sink_sid),
    )


async def _record(
    conn: Connection, attempt: Attempt, keep: int, result: AttemptResult | None
) -> int:
    """The embedded store's ``_record``: log the attempt (latest ``keep`` kept), count it,
    return the sink's consecutive failures after it."""
    delivered = (attempt.events if attempt.ok else 0) if result is None else result.delivered
    failed = 0 if attempt.ok else attempt.events - delivered
    sid = attempt.sink_sid
    await conn.execute(
        "INSERT INTO delivery_attempts (sink_sid, time, events, ok, status, error, duration_ms) "
        "SELECT %s, %s, %s, %s, %s, %s, %s WHERE EXISTS (SELECT 1 FROM sinks WHERE sid = %s)",
        (
            sid,
            attempt.time,
            attempt.events,
            attempt.ok,
            attempt.status,
            attempt.error,
            attempt.duration_ms,
            sid,
        ),
    )
    await conn.execute(
        "DELETE FROM delivery_attempts WHERE sink_sid = %s AND id <= ("
        "SELECT id FROM delivery_attempts WHERE sink_sid = %s "
        "ORDER BY id DESC LIMIT 1 OFFSET %s)",
        (sid, sid, keep),
    )
    success = attempt.ok or delivered > 0
    throttle = not attempt.ok and result is not None
    await conn.execute(
        "INSERT INTO delivery_sink_stats (sink_sid) "
        "SELECT %(sid)s WHERE EXISTS (SELECT 1 FROM sinks WHERE sid = %(sid)s) "
        "ON CONFLICT (sink_sid) DO NOTHING",
        {"sid": sid},
    )
    cursor = await conn.execute(
        "UPDATE delivery_sink_stats SET delivered = delivered + %(delivered)s, "
        "failed = failed + %(failed)s, "
        "consecutive_failures = CASE WHEN %(success)s THEN 0 ELSE consecutive_failures + 1 END, "
        "last_success_at = CASE WHEN %(success)s THEN %(time)s ELSE last_success_at END, "
        "last_error = CASE WHEN %(success)s THEN last_error ELSE %(error)s END, "
        "last_error_at = CASE WHEN %(success)s THEN last_error_at ELSE %(time)s END, "
        "throttled_rate = CASE WHEN %(throttle)s THEN %(rate)s ELSE throttled_rate END "
        "WHERE sink_sid = %(sid)s RETURNING consecutive_failures",
        {
            "sid": sid,
            "delivered": delivered,
            "failed": failed,
            "success": success,
            "time": attempt.time,
            "error": attempt.error,
            "throttle": throttle,
            "rate": None if result is None else result.throttled_rate,
        },
    )
    row = await cursor.fetchone()
    return 0 if row is None else int(row[0])


class DeadItem:
    """A queue item given up on, as the queue knows it."""

    __slots__ = ("account_sid", "attempts", "body", "enqueued_at", "event_id")

    def __init__(
        self, account_sid: str, event_id: str, body: bytes, enqueued_at: float, attempts: int
    ) -> None:
        self.account_sid = account_sid
        self.event_id = event_id
        self.body = body
        self.enqueued_at = enqueued_at
        self.attempts = attempts


class PostgresDeliveryLedger:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def cursor(self, consumer: str) -> int:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT position FROM delivery_cursors WHERE consumer = %s", (consumer,)
            )
            row = await cursor.fetchone()
        return 0 if row is None else int(row[0])

    async def set_cursor(self, consumer: str, position: int) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO delivery_cursors (consumer, position) VALUES (%s, %s) "
                "ON CONFLICT (consumer) DO UPDATE SET position = excluded.position",
                (consumer, position),
            )

    async def existing_sinks(self, sink_sids: Sequence[str]) -> set[str]:
        """Those of ``sink_sids`` that exist (the router drops items of deleted sinks)."""
        if not sink_sids:
            return set()
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT sid FROM sinks WHERE sid = ANY(%s)", (list(set(sink_sids)),)
            )
            return {row[0] for row in await cursor.fetchall()}

    async def failed_attempts(self, sink_sid: str, event_ids: Sequence[str]) -> dict[str, int]:
        """Failed attempts of these queued items (absent: none)."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT event_id, attempts FROM delivery_retries "
                "WHERE sink_sid = %s AND event_id = ANY(%s)",
                (sink_sid, list(event_ids)),
            )
            return {row[0]: int(row[1]) for row in await cursor.fetchall()}

    async def settle(
        self,
        attempt: Attempt,
        keep: int,
        result: AttemptResult,
        *,
        acked: Sequence[str],
        retried: Sequence[str],
        error: str,
        dead: Sequence[DeadItem],
        reason: str,
        now: float,
    ) -> int:
        """The attempt, the counters and the items' fates (by event id) in one transaction;
        the sink's consecutive failures after it."""
        sid = attempt.sink_sid
        async with self._pool.connection() as conn, conn.transaction():
            failures = await _record(conn, attempt, keep, result)
            gone = [*acked, *(d.event_id for d in dead)]
            if gone:
                await conn.execute(
                    "DELETE FROM delivery_retries WHERE sink_sid = %s AND event_id = ANY(%s)",
                    (sid, gone),
                )
            if dead:
                await self._bury(conn, sid, dead, reason, now)
            if retried:
                await _add_count(conn, sid, "retried", len(retried))
                async with conn.cursor() as cur:
                    await cur.executemany(
                        "INSERT INTO delivery_retries (sink_sid, event_id, attempts, last_error) "
                        "SELECT %s, %s, 1, %s WHERE EXISTS (SELECT 1 FROM sinks WHERE sid = %s) "
                        "ON CONFLICT (sink_sid, event_id) DO UPDATE SET "
                        "attempts = delivery_retries.attempts + 1, "
                        "last_error = excluded.last_error",
                        [(sid, event_id, error, sid) for event_id in retried],
                    )
        return failures

    @staticmethod
    async def _bury(
        conn: Connection, sink_sid: str, items: Sequence[DeadItem], reason: str, now: float
    ) -> None:
        buried = 0
        for item in items:
            cursor = await conn.execute(
                "INSERT INTO delivery_dead_letters (account_sid, sink_sid, event_id, body, "
                "enqueued_at, dead_at, attempts, reason) "
                "SELECT %s, %s, %s, %s, %s, %s, %s, %s "
                "WHERE EXISTS (SELECT 1 FROM sinks WHERE sid = %s) "
                "ON CONFLICT (sink_sid, event_id) DO NOTHING",
                (
                    item.account_sid,
                    sink_sid,
                    item.event_id,
                    item.body,
                    item.enqueued_at,
                    now,
                    item.attempts,
                    reason,
                    sink_sid,
                ),
            )
            buried += cursor.rowcount
        if buried:
            await _add_count(conn, sink_sid, "dead_lettered", buried)

    async def bury(self, sink_sid: str, item: DeadItem, reason: str, now: float) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            await self._bury(conn, sink_sid, [item], reason, now)

    async def note_retried(self, sink_sid: str, events: int) -> None:
        async with self._pool.connection() as conn:
            await _add_count(conn, sink_sid, "retried", events)

    async def record_attempt(
        self, attempt: Attempt, keep: int, result: AttemptResult | None = None
    ) -> int:
        async with self._pool.connection() as conn, conn.transaction():
            return await _record(conn, attempt, keep, result)

    async def attempts(self, sink_sid: str, limit: int) -> list[Attempt]:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT sink_sid, time, events, ok, status, error, duration_ms "
                "FROM delivery_attempts WHERE sink_sid = %s ORDER BY id DESC LIMIT %s",
                (sink_sid, limit),
            )
            rows = await cursor.fetchall()
        return [
            Attempt(
                sink_sid=r[0],
                time=r[1],
                events=r[2],
                ok=bool(r[3]),
                status=r[4],
                error=r[5],
                duration_ms=r[6],
            )
            for r in rows
        ]

    async def dead_letters(
        self,
        sink_sid: str,
        limit: int,
        *,
        after_id: int | None = None,
        before_id: int | None = None,
    ) -> list[DeadLetter]:
        async with self._pool.connection() as conn:
            if before_id is not None:
                cursor = await conn.execute(
                    f"SELECT {_DEAD_COLUMNS} FROM delivery_dead_letters "
                    "WHERE sink_sid = %s AND id < %s ORDER BY id DESC LIMIT %s",
                    (sink_sid, before_id, limit),
                )
                rows = list(reversed(await cursor.fetchall()))
            else:
                cursor = await conn.execute(
                    f"SELECT {_DEAD_COLUMNS} FROM delivery_dead_letters "
                    "WHERE sink_sid = %s AND id > %s ORDER BY id LIMIT %s",
                    (sink_sid, after_id or 0, limit),
                )
                rows = await cursor.fetchall()
        return [_dead_letter(r) for r in rows]

    async def select_dead_letters(
        self,
        sink_sid: str,
        *,
        event_id: str | None,
        dead_from: float | None,
        dead_until: float | None,
    ) -> list[DeadLetter]:
        """The dead letters a replay moves (all of them: a replay is an operator's action)."""
        where = ["sink_sid = %s"]
        args: list[object] = [sink_sid]
        for clause, value in (
            ("event_id = %s", event_id),
            ("dead_at >= %s", dead_from),
            ("dead_at <= %s", dead_until),
        ):
            if value is not None:
                where.append(clause)
                args.append(value)
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {_DEAD_COLUMNS} FROM delivery_dead_letters "
                f"WHERE {' AND '.join(where)} ORDER BY id",
                args,
            )
            return [_dead_letter(r) for r in await cursor.fetchall()]

    async def delete_dead_letters(self, ids: Sequence[int]) -> int:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "DELETE FROM delivery_dead_letters WHERE id = ANY(%s)", (list(ids),)
            )
            return cursor.rowcount

    async def stats(self, sink_sids: Sequence[str]) -> dict[str, SinkStats]:
        """The stored counters of those sinks that have any."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {_STATS_COLUMNS} FROM delivery_sink_stats WHERE sink_sid = ANY(%s)",
                (list(sink_sids),),
            )
            rows = await cursor.fetchall()
        return {
            r[0]: SinkStats(
                sink_sid=r[0],
                delivered=r[1],
                failed=r[2],
                retried=r[3],
                dead_lettered=r[4],
                consecutive_failures=r[5],
                last_error=r[6],
                last_error_at=r[7],
                last_success_at=r[8],
                throttled_rate=r[9],
            )
            for r in rows
        }

    async def sinks_with_stats(self) -> list[str]:
        async with self._pool.connection() as conn:
            cursor = await conn.execute("SELECT sink_sid FROM delivery_sink_stats")
            return [r[0] for r in await cursor.fetchall()]

    async def reset_failures(self, sink_sid: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE delivery_sink_stats SET consecutive_failures = 0 WHERE sink_sid = %s",
                (sink_sid,),
            )
