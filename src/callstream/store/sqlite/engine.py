"""The engine's cursor, call states and timers, and the events log, in the embedded database.

A commit writes a partition's new cursor, call states, timers and output events
in one transaction: in the embedded backend an engine step is exactly-once, and
a crash between steps replays the step from the old cursor.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from callstream.store.interfaces import (
    CallKey,
    EventEntry,
    OutputEvent,
    PartitionCommit,
    StoredCall,
    Timer,
)
from callstream.store.signal import HighWater
from callstream.store.sqlite.database import Database
from callstream.store.sqlite.insights import index_events

_EVENTS = "events"
# SQLite's default limit on bound parameters is 999 in older builds.
_MAX_PARAMS = 500


class SqliteEngineStore:
    def __init__(self, db: Database, events_written: HighWater, consumer: str = "engine") -> None:
        self._db = db
        self._events_written = events_written
        self.consumer = consumer

    async def cursor(self, partition: int) -> int:
        def job(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT offset FROM cursors WHERE consumer = ? AND partition = ?",
                (self.consumer, partition),
            ).fetchone()
            return 0 if row is None else int(row[0])

        return await self._db.read(job)

    async def load_calls(
        self, partition: int, keys: Sequence[CallKey]
    ) -> dict[CallKey, StoredCall]:
        def job(conn: sqlite3.Connection) -> dict[CallKey, StoredCall]:
            found: dict[CallKey, StoredCall] = {}
            by_account: dict[str, list[str]] = {}
            for account_sid, call_sid in keys:
                by_account.setdefault(account_sid, []).append(call_sid)
            for account_sid, call_sids in by_account.items():
                for start in range(0, len(call_sids), _MAX_PARAMS):
                    chunk = call_sids[start : start + _MAX_PARAMS]
                    rows = conn.execute(
                        "SELECT call_sid, state, seen FROM calls WHERE account_sid = ? "
                        f"AND call_sid IN ({','.join('?' * len(chunk))})",
                        (account_sid, *chunk),
                    )
                    for call_sid, state, seen in rows:
                        found[(account_sid, call_sid)] = StoredCall(state, seen)
            return found

        return await self._db.read(job)

    async def due_timers(self, partition: int, now: float, limit: int) -> Sequence[Timer]:
        def job(conn: sqlite3.Connection) -> list[Timer]:
            rows = conn.execute(
                "SELECT account_sid, call_sid, kind, due_at FROM timers "
                "WHERE partition = ? AND due_at <= ? ORDER BY due_at LIMIT ?",
                (partition, now, limit),
            ).fetchall()
            return [Timer(*row) for row in rows]

        return await self._db.read(job)

    async def next_due(self, partition: int) -> float | None:
        def job(conn: sqlite3.Connection) -> float | None:
            row = conn.execute(
                "SELECT min(due_at) FROM timers WHERE partition = ?", (partition,)
            ).fetchone()
            return None if row[0] is None else float(row[0])

        return await self._db.read(job)

    async def pending_timers(self) -> int:
        def job(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT count(*) FROM timers").fetchone()[0])

        return await self._db.read(job)

    async def commit(self, commit: PartitionCommit) -> None:
        last = await self._db.write(lambda conn: _write_commit(conn, self.consumer, commit))
        if commit.events:
            await self._events_written.advance({_EVENTS: last})


def _write_commit(conn: sqlite3.Connection, consumer: str, commit: PartitionCommit) -> int:
    partition = commit.partition
    if commit.cursor is not None:
        conn.execute(
            "INSERT INTO cursors VALUES (?, ?, ?) "
            "ON CONFLICT (consumer, partition) DO UPDATE SET offset = excluded.offset",
            (consumer, partition, commit.cursor),
        )
    conn.executemany(
        "INSERT INTO calls VALUES (?, ?, ?, ?, ?) ON CONFLICT (account_sid, call_sid) "
        "DO UPDATE SET state = excluded.state, seen = excluded.seen",
        [(a, c, partition, call.state, call.seen) for (a, c), call in commit.calls.items()],
    )
    conn.executemany(
        "DELETE FROM timers WHERE account_sid = ? AND call_sid = ? AND kind = ? AND due_at = ?",
        [(t.account_sid, t.call_sid, t.kind, t.due_at) for t in commit.timers_done],
    )
    conn.executemany(
        "DELETE FROM timers WHERE account_sid = ? AND call_sid = ? AND kind = ?",
        [(t.account_sid, t.call_sid, t.kind) for t in commit.timers_cancelled],
    )
    conn.executemany(
        "INSERT INTO timers VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (account_sid, call_sid, kind) DO UPDATE SET due_at = excluded.due_at",
        [(t.account_sid, t.call_sid, t.kind, partition, t.due_at) for t in commit.timers_set],
    )
    conn.executemany(
        "INSERT INTO events (account_sid, call_sid, type, identity, time, body) "
        "VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (account_sid, call_sid, type, identity) DO NOTHING",
        [(e.account_sid, e.call_sid, e.type, e.identity, e.time, e.body) for e in commit.events],
    )
    index_events(conn, commit.events)
    return _last_event(conn)


def _last_event(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT max(offset) FROM events").fetchone()
    return 0 if row[0] is None else int(row[0])


class SqliteEventLog:
    def __init__(self, db: Database, events_written: HighWater) -> None:
        self._db = db
        self._events_written = events_written

    async def read(
        self, after: int, limit: int, account_sid: str | None = None
    ) -> Sequence[EventEntry]:
        def job(conn: sqlite3.Connection) -> list[EventEntry]:
            if account_sid is None:
                rows = conn.execute(
                    "SELECT offset, account_sid, call_sid, type, identity, time, body FROM events "
                    "WHERE offset > ? ORDER BY offset LIMIT ?",
                    (after, limit),
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT offset, account_sid, call_sid, type, identity, time, body FROM events "
                    "WHERE offset > ? AND account_sid = ? ORDER BY offset LIMIT ?",
                    (after, account_sid, limit),
                ).fetchall()
            return [EventEntry(row[0], OutputEvent(*row[1:])) for row in rows]

        return await self._db.read(job)

    async def last_offset(self) -> int:
        return await self._db.read(_last_event)

    async def wait(self, after: int, timeout: float) -> None:
        await self._events_written.wait(_EVENTS, after, timeout)
