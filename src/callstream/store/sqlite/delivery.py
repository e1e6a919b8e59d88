"""The per-sink delivery queue in the embedded database (see ``store/delivery.py``)."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Hashable, Sequence

from callstream.store.delivery import (
    Attempt,
    DeadLetter,
    Delivery,
    NewDelivery,
    QueuedSink,
)
from callstream.store.sqlite.database import Database
from callstream.store.sqlite.signal import HighWater

_ANY = "*"  # the HighWater stream of enqueues to any sink
_ROUTER_PARTITION = 0


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
                "FROM delivery_queue WHERE sink_sid = ? AND due_at <= ? AND claimed_until <= ? "
                "ORDER BY id LIMIT ?",
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

    async def ack(self, ids: Sequence[int]) -> None:
        if ids:
            await self._db.write(
                lambda conn: conn.executemany(
                    "DELETE FROM delivery_queue WHERE id = ?", [(i,) for i in ids]
                )
            )

    async def retry(self, ids: Sequence[int], due_at: float, error: str) -> None:
        if ids:
            await self._db.write(
                lambda conn: conn.executemany(
                    "UPDATE delivery_queue SET due_at = ?, claimed_until = 0, "
                    "attempts = attempts + 1, last_error = ? WHERE id = ?",
                    [(due_at, error, i) for i in ids],
                )
            )

    async def dead_letter(self, ids: Sequence[int], reason: str, now: float) -> None:
        if not ids:
            return

        def job(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO delivery_dead_letters (account_sid, sink_sid, event_id, body, "
                "enqueued_at, dead_at, attempts, reason) "
                "SELECT account_sid, sink_sid, event_id, body, enqueued_at, ?, attempts + 1, ? "
                "FROM delivery_queue WHERE id = ?",
                [(now, reason, i) for i in ids],
            )
            conn.executemany("DELETE FROM delivery_queue WHERE id = ?", [(i,) for i in ids])

        await self._db.write(job)

    async def bury(self, item: NewDelivery, reason: str, attempts: int, now: float) -> None:
        await self._db.write(
            lambda conn: conn.execute(
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
        )

    async def record_attempt(self, attempt: Attempt, keep: int) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO delivery_attempts (sink_sid, time, events, ok, status, error) "
                "SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM sinks WHERE sid = ?)",
                (
                    attempt.sink_sid,
                    attempt.time,
                    attempt.events,
                    int(attempt.ok),
                    attempt.status,
                    attempt.error,
                    attempt.sink_sid,
                ),
            )
            conn.execute(
                "DELETE FROM delivery_attempts WHERE sink_sid = ? AND id <= ("
                "SELECT id FROM delivery_attempts WHERE sink_sid = ? "
                "ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (attempt.sink_sid, attempt.sink_sid, keep),
            )

        await self._db.write(job)

    async def attempts(self, sink_sid: str, limit: int) -> list[Attempt]:
        def job(conn: sqlite3.Connection) -> list[Attempt]:
            rows = conn.execute(
                "SELECT sink_sid, time, events, ok, status, error FROM delivery_attempts "
                "WHERE sink_sid = ? ORDER BY id DESC LIMIT ?",
                (sink_sid, limit),
            ).fetchall()
            return [
                Attempt(
                    sink_sid=r[0], time=r[1], events=r[2], ok=bool(r[3]), status=r[4], error=r[5]
                )
                for r in rows
            ]

        return await self._db.read(job)

    async def dead_letters(self, sink_sid: str, limit: int) -> list[DeadLetter]:
        def job(conn: sqlite3.Connection) -> list[DeadLetter]:
            rows = conn.execute(
                "SELECT account_sid, sink_sid, event_id, body, enqueued_at, dead_at, attempts, "
                "reason FROM delivery_dead_letters WHERE sink_sid = ? ORDER BY id LIMIT ?",
                (sink_sid, limit),
            ).fetchall()
            return [
                DeadLetter(
                    account_sid=r[0],
                    sink_sid=r[1],
                    event_id=r[2],
                    body=bytes(r[3]),
                    enqueued_at=r[4],
                    dead_at=r[5],
                    attempts=r[6],
                    reason=r[7],
                )
                for r in rows
            ]

        return await self._db.read(job)

    async def pending(self, sink_sid: str) -> int:
        def job(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT count(*) FROM delivery_queue WHERE sink_sid = ?", (sink_sid,)
            ).fetchone()
            return int(row[0])

        return await self._db.read(job)

    async def queued_sinks(self) -> list[QueuedSink]:
        def job(conn: sqlite3.Connection) -> list[QueuedSink]:
            rows = conn.execute(
                "SELECT DISTINCT account_sid, sink_sid FROM delivery_queue"
            ).fetchall()
            return [QueuedSink(account_sid=r[0], sink_sid=r[1]) for r in rows]

        return await self._db.read(job)

    async def next_due(self, sink_sid: str) -> float | None:
        def job(conn: sqlite3.Connection) -> float | None:
            row = conn.execute(
                "SELECT min(max(due_at, claimed_until)) FROM delivery_queue WHERE sink_sid = ?",
                (sink_sid,),
            ).fetchone()
            return None if row[0] is None else float(row[0])

        return await self._db.read(job)

    async def release_claims(self) -> None:
        await self._db.write(
            lambda conn: conn.execute(
                "UPDATE delivery_queue SET claimed_until = 0 WHERE claimed_until > 0"
            )
        )

    def enqueued_mark(self, sink_sid: str | None) -> int:
        return self._enqueued.get(_ANY if sink_sid is None else sink_sid)

    async def wait_enqueued(self, sink_sid: str | None, after: int, timeout: float) -> None:
        await self._enqueued.wait(_ANY if sink_sid is None else sink_sid, after, timeout)
