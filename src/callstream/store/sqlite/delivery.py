"""The per-sink delivery queue in the embedded database (see ``store/delivery.py``)."""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Hashable, Sequence
from typing import Any

import msgspec

from callstream.store.delivery import (
    Attempt,
    AttemptResult,
    DeadLetter,
    Delivery,
    NewDelivery,
    QueuedSink,
    Settlement,
    SinkStats,
)
from callstream.store.signal import HighWater
from callstream.store.sqlite.database import Database

_ANY = "*"  # the HighWater stream of enqueues to any sink
_ROUTER_PARTITION = 0
_STATS_COLUMNS = (
    "sink_sid, delivered, failed, retried, dead_lettered, consecutive_failures, last_error, "
    "last_error_at, last_success_at, throttled_rate"
)


def _count_items(conn: sqlite3.Connection, ids: Sequence[int], column: str) -> None:
    """Add the queue items ``ids`` to ``column`` of their sinks' statistics (before they
    leave the queue), in the caller's transaction."""
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        conn.execute(
            f"INSERT INTO delivery_sink_stats (sink_sid, {column}) "
            f"SELECT sink_sid, count(*) FROM delivery_queue WHERE id IN ({marks}) "
            f"GROUP BY sink_sid "
            f"ON CONFLICT (sink_sid) DO UPDATE SET {column} = {column} + excluded.{column}",
            list(chunk),
        )


def _add_count(conn: sqlite3.Connection, sink_sid: str, column: str, amount: int) -> None:
    conn.execute(
        f"INSERT INTO delivery_sink_stats (sink_sid, {column}) "
        f"SELECT ?, ? WHERE EXISTS (SELECT 1 FROM sinks WHERE sid = ?) "
        f"ON CONFLICT (sink_sid) DO UPDATE SET {column} = {column} + excluded.{column}",
        (sink_sid, amount, sink_sid),
    )


def _dead_letter(row: tuple[Any, ...]) -> DeadLetter:
    return DeadLetter(
        id=row[0],
        account_sid=row[1],
        sink_sid=row[2],
        event_id=row[3],
        body=bytes(row[4]),
        enqueued_at=row[5],
        dead_at=row[6],
        attempts=row[7],
        reason=row[8],
    )


def _ack(conn: sqlite3.Connection, ids: Sequence[int]) -> None:
    conn.executemany("DELETE FROM delivery_queue WHERE id = ?", [(i,) for i in ids])


def _retry(conn: sqlite3.Connection, ids: Sequence[int], due_at: float, error: str) -> None:
    _count_items(conn, ids, "retried")
    conn.executemany(
        "UPDATE delivery_queue SET due_at = ?, claimed_until = 0, "
        "attempts = attempts + 1, last_error = ? WHERE id = ?",
        [(due_at, error, i) for i in ids],
    )


def _bury_items(conn: sqlite3.Connection, ids: Sequence[int], reason: str, now: float) -> None:
    """Move queue items to the dead letters."""
    _count_items(conn, ids, "dead_lettered")
    conn.executemany(
        "INSERT INTO delivery_dead_letters (account_sid, sink_sid, event_id, body, "
        "enqueued_at, dead_at, attempts, reason) "
        "SELECT account_sid, sink_sid, event_id, body, enqueued_at, ?, attempts + 1, ? "
        "FROM delivery_queue WHERE id = ?",
        [(now, reason, i) for i in ids],
    )
    conn.executemany("DELETE FROM delivery_queue WHERE id = ?", [(i,) for i in ids])


def _record(
    conn: sqlite3.Connection, attempt: Attempt, keep: int, result: AttemptResult | None
) -> int:
    """Log the attempt (keeping the sink's latest ``keep``) and count it in the sink's
    statistics; return the sink's consecutive failures after it."""
    delivered = (attempt.events if attempt.ok else 0) if result is None else result.delivered
    failed = 0 if attempt.ok else attempt.events - delivered
    sid = attempt.sink_sid
    conn.execute(
        "INSERT INTO delivery_attempts (sink_sid, time, events, ok, status, error, duration_ms) "
        "SELECT ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM sinks WHERE sid = ?)",
        (
            sid,
            attempt.time,
            attempt.events,
            int(attempt.ok),
            attempt.status,
            attempt.error,
            attempt.duration_ms,
            sid,
        ),
    )
    conn.execute(
        "DELETE FROM delivery_attempts WHERE sink_sid = ? AND id <= ("
        "SELECT id FROM delivery_attempts WHERE sink_sid = ? "
        "ORDER BY id DESC LIMIT 1 OFFSET ?)",
        (sid, sid, keep),
    )
    conn.execute(
        "INSERT INTO delivery_sink_stats (sink_sid) "
        "SELECT ? WHERE EXISTS (SELECT 1 FROM sinks WHERE sid = ?) "
        "ON CONFLICT (sink_sid) DO NOTHING",
        (sid, sid),
    )
    conn.execute(
        "UPDATE delivery_sink_stats SET delivered = delivered + ?, failed = failed + ? "
        "WHERE sink_sid = ?",
        (delivered, failed, sid),
    )
    if attempt.ok or delivered > 0:
        conn.execute(
            "UPDATE delivery_sink_stats SET consecutive_failures = 0, last_success_at = ? "
            "WHERE sink_sid = ?",
            (attempt.time, sid),
        )
    else:
        conn.execute(
            "UPDATE delivery_sink_stats SET consecutive_failures = consecutive_failures + 1, "
            "last_error = ?, last_error_at = ? WHERE sink_sid = ?",
            (attempt.error, attempt.time, sid),
        )
    if not attempt.ok and result is not None:
        conn.execute(
            "UPDATE delivery_sink_stats SET throttled_rate = ? WHERE sink_sid = ?",
            (result.throttled_rate, sid),
        )
    row = conn.execute(
        "SELECT consecutive_failures FROM delivery_sink_stats WHERE sink_sid = ?", (sid,)
    ).fetchone()
    return 0 if row is None else int(row[0])


class SqliteDeliveryStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._enqueued = HighWater()
        self._sequence = itertools.count(1)

    async def cursor(self, consumer: str) -> int:
        def job(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT offset FROM cursors WHERE consumer = ? AND partition = ?",
                (consumer, _ROUTER_PARTITION),
            ).fetchone()
            return 0 if row is None else int(row[0])

        return await self._db.read(job)

    async def enqueue(
        self, items: Sequence[NewDelivery], now: float, *, consumer: str, cursor: int
    ) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT OR IGNORE INTO delivery_queue "
                "(account_sid, sink_sid, event_id, body, enqueued_at, due_at) "
                "SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM sinks WHERE sid = ?)",
                [
                    (i.account_sid, i.sink_sid, i.event_id, i.body, now, now, i.sink_sid)
                    for i in items
                ],
            )
            conn.execute(
                "INSERT INTO cursors VALUES (?, ?, ?) "
                "ON CONFLICT (consumer, partition) DO UPDATE SET offset = excluded.offset",
                (consumer, _ROUTER_PARTITION, cursor),
            )

        await self._db.write(job)
        if items:
            mark = next(self._sequence)
            marks: dict[Hashable, int] = {i.sink_sid: mark for i in items}
            marks[_ANY] = mark
            await self._enqueued.advance(marks)

    async def claim(self, sink_sid: str, now: float, limit: int, lease: float) -> list[Delivery]:
        def job(conn: sqlite3.Connection) -> list[Delivery]:
            rows = conn.execute(
                "SELECT id, account_sid, sink_sid, event_id, body, enqueued_at, attempts "
                "FROM delivery_queue WHERE sink_sid = ? AND due_at <= ? AND +claimed_until <= ? "
                # The order of index delivery_queue_due, so the walk stops after ``limit`` rows
                # instead of sorting every due row of a deep queue ("+" keeps SQLite's planner
                # off the claimed_until index, which matches nearly every row).
                "ORDER BY due_at, id LIMIT ?",
                (sink_sid, now, now, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE delivery_queue SET claimed_until = ? WHERE id = ?",
                [(now + lease, row[0]) for row in rows],
            )
            return [
                Delivery(
                    id=row[0],
                    account_sid=row[1],
                    sink_sid=row[2],
                    event_id=row[3],
                    body=bytes(row[4]),
                    enqueued_at=row[5],
                    attempts=row[6],
                )
                for row in rows
            ]

        return await self._db.write(job)

    # Jobs return None or plain values, never a cursor: a cursor finalised on the event
    # loop's thread while the writer thread uses the connection is "API misuse" to SQLite.

    async def settle(
        self, attempt: Attempt, keep: int, result: AttemptResult, settlement: Settlement
    ) -> int:
        def job(conn: sqlite3.Connection) -> int:
            failures = _record(conn, attempt, keep, result)
            if settlement.ack:
                _ack(conn, settlement.ack)
            if settlement.dead:
                _bury_items(conn, settlement.dead, settlement.reason, settlement.now)
            if settlement.retry:
                _retry(conn, settlement.retry, settlement.due_at, settlement.error)
            return failures

        return await self._db.write(job)

    async def bury(self, item: NewDelivery, reason: str, attempts: int, now: float) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO delivery_dead_letters (account_sid, sink_sid, event_id, body, "
                "enqueued_at, dead_at, attempts, reason) "
                "SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM sinks WHERE sid = ?)",
                (
                    item.account_sid,
                    item.sink_sid,
                    item.event_id,
                    item.body,
                    now,
                    now,
                    attempts,
                    reason,
                    item.sink_sid,
                ),
            )
            _add_count(conn, item.sink_sid, "dead_lettered", 1)

        await self._db.write(job)

    async def note_retried(self, sink_sid: str, events: int) -> None:
        await self._db.write(lambda conn: _add_count(conn, sink_sid, "retried", events))

    async def record_attempt(
        self, attempt: Attempt, keep: int, result: AttemptResult | None = None
    ) -> int:
        return await self._db.write(lambda conn: _record(conn, attempt, keep, result))

    async def attempts(self, sink_sid: str, limit: int) -> list[Attempt]:
        def job(conn: sqlite3.Connection) -> list[Attempt]:
            rows = conn.execute(
                "SELECT sink_sid, time, events, ok, status, error, duration_ms "
                "FROM delivery_attempts "
                "WHERE sink_sid = ? ORDER BY id DESC LIMIT ?",
                (sink_sid, limit),
            ).fetchall()
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

        return await self._db.read(job)

    async def dead_letters(
        self,
        sink_sid: str,
        limit: int,
        *,
        after_id: int | None = None,
        before_id: int | None = None,
    ) -> list[DeadLetter]:
        columns = (
            "id, account_sid, sink_sid, event_id, body, enqueued_at, dead_at, attempts, reason"
        )

        def job(conn: sqlite3.Connection) -> list[DeadLetter]:
            if before_id is not None:
                rows = conn.execute(
                    f"SELECT {columns} FROM delivery_dead_letters WHERE sink_sid = ? AND id < ? "
                    "ORDER BY id DESC LIMIT ?",
                    (sink_sid, before_id, limit),
                ).fetchall()
                rows.reverse()
            else:
                rows = conn.execute(
                    f"SELECT {columns} FROM delivery_dead_letters WHERE sink_sid = ? AND id > ? "
                    "ORDER BY id LIMIT ?",
                    (sink_sid, after_id or 0, limit),
                ).fetchall()
            return [_dead_letter(r) for r in rows]

        return await self._db.read(job)

    async def replay_dead_letters(
        self,
        sink_sid: str,
        now: float,
        *,
        event_id: str | None = None,
        dead_from: float | None = None,
        dead_until: float | None = None,
    ) -> int:
        where = ["sink_sid = ?"]
        args: list[object] = [sink_sid]
        if event_id is not None:
            where.append("event_id = ?")
            args.append(event_id)
        if dead_from is not None:
            where.append("dead_at >= ?")
            args.append(dead_from)
        if dead_until is not None:
            where.append("dead_at <= ?")
            args.append(dead_until)

        def job(conn: sqlite3.Connection) -> int:
            rows = conn.execute(
                "SELECT id, account_sid, event_id, body FROM delivery_dead_letters "
                f"WHERE {' AND '.join(where)} ORDER BY id",
                args,
            ).fetchall()
            # An event still (or again) queued is already going to be delivered: it only
            # leaves the dead letters (the queue keeps one copy per CloudEvent id).
            conn.executemany(
                "INSERT OR IGNORE INTO delivery_queue "
                "(account_sid, sink_sid, event_id, body, enqueued_at, due_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(r[1], sink_sid, r[2], r[3], now, now) for r in rows],
            )
            conn.executemany(
                "DELETE FROM delivery_dead_letters WHERE id = ?", [(r[0],) for r in rows]
            )
            return len(rows)

        replayed = await self._db.write(job)
        if replayed:
            await self._signal(sink_sid)
        return replayed

    async def sink_stats(self, sink_sids: Sequence[str]) -> dict[str, SinkStats]:
        sids = list(dict.fromkeys(sink_sids))

        def job(conn: sqlite3.Connection) -> dict[str, SinkStats]:
            found: dict[str, SinkStats] = {sid: SinkStats(sink_sid=sid) for sid in sids}
            for start in range(0, len(sids), 500):
                chunk = sids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                queued = {
                    r[0]: (int(r[1]), r[2])
                    for r in conn.execute(
                        "SELECT sink_sid, count(*), min(enqueued_at) FROM delivery_queue "
                        f"WHERE sink_sid IN ({marks}) GROUP BY sink_sid",
                        chunk,
                    ).fetchall()
                }
                for r in conn.execute(
                    f"SELECT {_STATS_COLUMNS} FROM delivery_sink_stats WHERE sink_sid IN ({marks})",
                    chunk,
                ).fetchall():
                    found[r[0]] = SinkStats(
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
                for sid, (pending, oldest) in queued.items():
                    found[sid] = msgspec.structs.replace(
                        found[sid], pending=pending, oldest_enqueued_at=oldest
                    )
            return found

        return await self._db.read(job)

    async def all_sink_stats(self) -> list[SinkStats]:
        def job(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT sink_sid FROM delivery_sink_stats "
                "UNION SELECT DISTINCT sink_sid FROM delivery_queue ORDER BY 1"
            ).fetchall()
            return [r[0] for r in rows]

        stats = await self.sink_stats(await self._db.read(job))
        return list(stats.values())

    async def reset_failures(self, sink_sid: str, now: float) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE delivery_sink_stats SET consecutive_failures = 0 WHERE sink_sid = ?",
                (sink_sid,),
            )
            conn.execute(
                "UPDATE delivery_queue SET due_at = ? WHERE sink_sid = ? AND due_at > ?",
                (now, sink_sid, now),
            )

        await self._db.write(job)
        await self._signal(sink_sid)

    async def _signal(self, sink_sid: str) -> None:
        """Wake the sink's worker (and the service, which starts one if none runs)."""
        mark = next(self._sequence)
        await self._enqueued.advance({sink_sid: mark, _ANY: mark})

    async def pending(self, sink_sid: str) -> int:
        def job(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT count(*) FROM delivery_queue WHERE sink_sid = ?", (sink_sid,)
            ).fetchone()
            return int(row[0])

        return await self._db.read(job)

    async def queued_sinks(self) -> list[QueuedSink]:
        def job(conn: sqlite3.Connection) -> list[QueuedSink]:
            # One index probe per sink rather than a scan of every queued item.
            rows = conn.execute(
                "SELECT s.account_sid, s.sid FROM sinks s WHERE EXISTS "
                "(SELECT 1 FROM delivery_queue q WHERE q.sink_sid = s.sid)"
            ).fetchall()
            return [QueuedSink(account_sid=r[0], sink_sid=r[1]) for r in rows]

        return await self._db.read(job)

    async def next_due(self, sink_sid: str) -> float | None:
        def job(conn: sqlite3.Connection) -> float | None:
            # min(max(due_at, claimed_until)) over the sink's items, in two index walks: the
            # earliest due of the unclaimed ones, and the claimed ones (a few requests' worth).
            now = time.time()
            unclaimed = conn.execute(
                "SELECT due_at FROM delivery_queue WHERE sink_sid = ? AND +claimed_until <= ? "
                "ORDER BY due_at LIMIT 1",
                (sink_sid, now),
            ).fetchone()
            claimed = conn.execute(
                "SELECT min(max(due_at, claimed_until)) FROM delivery_queue "
                "WHERE sink_sid = ? AND claimed_until > ?",
                (sink_sid, now),
            ).fetchone()
            found = [r[0] for r in (unclaimed, claimed) if r is not None and r[0] is not None]
            return float(min(found)) if found else None

        return await self._db.read(job)

    async def release_claims(self) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE delivery_queue SET claimed_until = 0 WHERE claimed_until > 0")

        await self._db.write(job)

    def enqueued_mark(self, sink_sid: str | None) -> int:
        return self._enqueued.get(_ANY if sink_sid is None else sink_sid)

    async def wait_enqueued(self, sink_sid: str | None, after: int, timeout: float) -> None:
        await self._enqueued.wait(_ANY if sink_sid is None else sink_sid, after, timeout)
