"""The Event Streams control plane in the embedded database (see ``store/control.py``).

Each change is one write job, so its checks and its effects share a transaction: the sink
limit cannot be overrun by two concurrent creates, and a subscription cannot land on a sink
that was deleted or taken a moment before. Every job that changes what the router would do
bumps the account's ``control_versions`` row in the same transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import msgspec

from callstream.store.control import (
    AlreadySubscribed,
    NewOutboxItem,
    NoSinkTest,
    NotFound,
    OutboxItem,
    RoutingTable,
    Sink,
    SinkInUse,
    SinkLimitReached,
    SinkNotActive,
    SinkRoute,
    SinkStatus,
    SubscribedType,
    Subscription,
    Window,
    WrongTestId,
)
from callstream.store.signal import HighWater
from callstream.store.sqlite.database import Database

_SINK_COLUMNS = (
    "sid, account_sid, description, sink_type, configuration, status, test_id, "
    "date_created, date_updated"
)
_SUBSCRIPTION_COLUMNS = "sid, account_sid, sink_sid, description, date_created, date_updated"
_OUTBOX = "outbox"  # the HighWater stream that wakes readers of the outbox

_json_encoder = msgspec.json.Encoder()
_config_decoder = msgspec.json.Decoder(dict[str, Any])


def _sink(row: Sequence[Any]) -> Sink:
    return Sink(
        sid=row[0],
        account_sid=row[1],
        description=row[2],
        sink_type=row[3],
        configuration=_config_decoder.decode(row[4]),
        status=row[5],
        test_id=row[6],
        date_created=row[7],
        date_updated=row[8],
    )


def _subscription(row: tuple[Any, ...]) -> Subscription:
    return Subscription(
        sid=row[0],
        account_sid=row[1],
        sink_sid=row[2],
        description=row[3],
        date_created=row[4],
        date_updated=row[5],
    )


def _bump(conn: sqlite3.Connection, account_sid: str) -> None:
    conn.execute(
        "INSERT INTO control_versions VALUES (?, 1) "
        "ON CONFLICT (account_sid) DO UPDATE SET version = version + 1",
        (account_sid,),
    )


def _select_sink(conn: sqlite3.Connection, account_sid: str, sid: str) -> Sink | None:
    row = conn.execute(
        f"SELECT {_SINK_COLUMNS} FROM sinks WHERE account_sid = ? AND sid = ?",
        (account_sid, sid),
    ).fetchone()
    return None if row is None else _sink(row)


def _select_subscription(
    conn: sqlite3.Connection, account_sid: str, sid: str
) -> Subscription | None:
    row = conn.execute(
        f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE account_sid = ? AND sid = ?",
        (account_sid, sid),
    ).fetchone()
    return None if row is None else _subscription(row)


def _require_sink(conn: sqlite3.Connection, account_sid: str, sid: str) -> Sink:
    sink = _select_sink(conn, account_sid, sid)
    if sink is None:
        raise NotFound(f"no sink {sid}")
    return sink


def _require_subscription(conn: sqlite3.Connection, account_sid: str, sid: str) -> Subscription:
    subscription = _select_subscription(conn, account_sid, sid)
    if subscription is None:
        raise NotFound(f"no subscription {sid}")
    return subscription


def _windowed(
    conn: sqlite3.Connection,
    select: str,
    where: list[str],
    params: list[Any],
    window: Window,
) -> list[tuple[Any, ...]]:
    """Rows of ``select`` in (date_created, sid) order within ``window``, ascending."""
    where = list(where)
    params = list(params)
    descending = window.before is not None and window.after is None
    if window.after is not None:
        where.append("(date_created, sid) > (?, ?)")
        params.extend(window.after)
    if window.before is not None:
        where.append("(date_created, sid) < (?, ?)")
        params.extend(window.before)
    order = "DESC" if descending else "ASC"
    sql = f"{select} WHERE {' AND '.join(where)} ORDER BY date_created {order}, sid {order} LIMIT ?"
    rows: list[tuple[Any, ...]] = conn.execute(sql, (*params, window.limit)).fetchall()
    # A previous page is the rows just before the mark: read backwards, answer forwards.
    return rows[::-1] if descending else rows


class SqliteControlStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._outbox_written = HighWater()

    # -- sinks --------------------------------------------------------------------------------

    async def create_sink(self, sink: Sink, *, max_sinks: int) -> None:
        def job(conn: sqlite3.Connection) -> None:
            (count,) = conn.execute(
                "SELECT count(*) FROM sinks WHERE account_sid = ?", (sink.account_sid,)
            ).fetchone()
            if count >= max_sinks:
                raise SinkLimitReached(max_sinks)
            conn.execute(
                f"INSERT INTO sinks ({_SINK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    sink.sid,
                    sink.account_sid,
                    sink.description,
                    sink.sink_type,
                    _json_encoder.encode(sink.configuration).decode("utf-8"),
                    sink.status,
                    sink.test_id,
                    sink.date_created,
                    sink.date_updated,
                ),
            )
            _bump(conn, sink.account_sid)

        await self._db.write(job)

    async def get_sink(self, account_sid: str, sid: str) -> Sink | None:
        return await self._db.read(lambda conn: _select_sink(conn, account_sid, sid))

    async def list_sinks(
        self,
        account_sid: str,
        window: Window,
        *,
        status: SinkStatus | None = None,
        in_use: bool | None = None,
    ) -> Sequence[Sink]:
        where = ["account_sid = ?"]
        params: list[Any] = [account_sid]
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if in_use is not None:
            used = "EXISTS (SELECT 1 FROM subscriptions s WHERE s.sink_sid = sinks.sid)"
            where.append(used if in_use else f"NOT {used}")

        def job(conn: sqlite3.Connection) -> list[Sink]:
            select = f"SELECT {_SINK_COLUMNS} FROM sinks"
            return [_sink(row) for row in _windowed(conn, select, where, params, window)]

        return await self._db.read(job)

    async def update_sink(self, account_sid: str, sid: str, description: str, now: float) -> Sink:
        def job(conn: sqlite3.Connection) -> Sink:
            _require_sink(conn, account_sid, sid)
            conn.execute(
                "UPDATE sinks SET description = ?, date_updated = ? WHERE sid = ?",
                (description, now, sid),
            )
            return _require_sink(conn, account_sid, sid)

        return await self._db.write(job)

    async def delete_sink(self, account_sid: str, sid: str) -> None:
        def job(conn: sqlite3.Connection) -> None:
            _require_sink(conn, account_sid, sid)
            used = conn.execute("SELECT sid FROM subscriptions WHERE sink_sid = ?", (sid,))
            row = used.fetchone()
            if row is not None:
                raise SinkInUse(row[0])
            conn.execute("DELETE FROM sinks WHERE sid = ?", (sid,))
            _bump(conn, account_sid)

        await self._db.write(job)

    async def record_sink_test(
        self, account_sid: str, sid: str, test_id: str, item: NewOutboxItem, now: float
    ) -> Sink:
        def job(conn: sqlite3.Connection) -> tuple[Sink, int]:
            sink = _require_sink(conn, account_sid, sid)
            status = sink.status if sink.status in ("active", "validating") else "validating"
            conn.execute(
                "UPDATE sinks SET test_id = ?, status = ?, date_updated = ? WHERE sid = ?",
                (test_id, status, now, sid),
            )
            cursor = conn.execute(
                "INSERT INTO sink_outbox "
                "(account_sid, sink_sid, type, schema_version, body, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (account_sid, sid, item.type, item.schema_version, item.body, now),
            )
            _bump(conn, account_sid)
            return _require_sink(conn, account_sid, sid), int(cursor.lastrowid or 0)

        sink, item_id = await self._db.write(job)
        await self._outbox_written.advance({_OUTBOX: item_id})
        return sink

    async def validate_sink(self, account_sid: str, sid: str, test_id: str, now: float) -> Sink:
        def job(conn: sqlite3.Connection) -> Sink:
            sink = _require_sink(conn, account_sid, sid)
            if sink.test_id is None:
                raise NoSinkTest(f"sink {sid} has not been tested")
            if sink.test_id != test_id:
                raise WrongTestId(f"{test_id!r} is not the latest test of sink {sid}")
            if sink.status != "active":
                conn.execute(
                    "UPDATE sinks SET status = 'active', date_updated = ? WHERE sid = ?",
                    (now, sid),
                )
                _bump(conn, account_sid)
            return _require_sink(conn, account_sid, sid)

        return await self._db.write(job)

    async def set_sink_status(
        self, account_sid: str, sid: str, status: SinkStatus, now: float
    ) -> Sink:
        def job(conn: sqlite3.Connection) -> Sink:
            _require_sink(conn, account_sid, sid)
            conn.execute(
                "UPDATE sinks SET status = ?, date_updated = ? WHERE sid = ?", (status, now, sid)
            )
            _bump(conn, account_sid)
            return _require_sink(conn, account_sid, sid)

        return await self._db.write(job)

    # -- subscriptions -----------------------------------------------------------------------

    async def create_subscription(
        self, subscription: Subscription, types: Sequence[SubscribedType]
    ) -> None:
        def job(conn: sqlite3.Connection) -> None:
            sink = _require_sink(conn, subscription.account_sid, subscription.sink_sid)
            if sink.status != "active":
                raise SinkNotActive(sink.status)
            used = conn.execute(
                "SELECT sid FROM subscriptions WHERE sink_sid = ?", (sink.sid,)
            ).fetchone()
            if used is not None:
                raise SinkInUse(used[0])
            conn.execute(
                f"INSERT INTO subscriptions ({_SUBSCRIPTION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    subscription.sid,
                    subscription.account_sid,
                    subscription.sink_sid,
                    subscription.description,
                    subscription.date_created,
                    subscription.date_updated,
                ),
            )
            conn.executemany(
                "INSERT INTO subscribed_types VALUES (?, ?, ?)",
                [(subscription.sid, t.type, t.schema_version) for t in types],
            )
            _bump(conn, subscription.account_sid)

        await self._db.write(job)

    async def get_subscription(self, account_sid: str, sid: str) -> Subscription | None:
        return await self._db.read(lambda conn: _select_subscription(conn, account_sid, sid))

    async def list_subscriptions(
        self, account_sid: str, window: Window, *, sink_sid: str | None = None
    ) -> Sequence[Subscription]:
        where = ["account_sid = ?"]
        params: list[Any] = [account_sid]
        if sink_sid is not None:
            where.append("sink_sid = ?")
            params.append(sink_sid)

        def job(conn: sqlite3.Connection) -> list[Subscription]:
            select = f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions"
            return [_subscription(row) for row in _windowed(conn, select, where, params, window)]

        return await self._db.read(job)

    async def update_subscription(
        self, account_sid: str, sid: str, description: str, now: float
    ) -> Subscription:
        def job(conn: sqlite3.Connection) -> Subscription:
            _require_subscription(conn, account_sid, sid)
            conn.execute(
                "UPDATE subscriptions SET description = ?, date_updated = ? WHERE sid = ?",
                (description, now, sid),
            )
            return _require_subscription(conn, account_sid, sid)

        return await self._db.write(job)

    async def delete_subscription(self, account_sid: str, sid: str) -> None:
        def job(conn: sqlite3.Connection) -> None:
            _require_subscription(conn, account_sid, sid)
            conn.execute("DELETE FROM subscriptions WHERE sid = ?", (sid,))
            _bump(conn, account_sid)

        await self._db.write(job)

    # -- a subscription's event types ---------------------------------------------------------

    async def list_subscribed_types(
        self, account_sid: str, subscription_sid: str
    ) -> Sequence[SubscribedType]:
        def job(conn: sqlite3.Connection) -> list[SubscribedType]:
            _require_subscription(conn, account_sid, subscription_sid)
            rows = conn.execute(
                "SELECT type, schema_version FROM subscribed_types "
                "WHERE subscription_sid = ? ORDER BY type",
                (subscription_sid,),
            ).fetchall()
            return [
                SubscribedType(
                    account_sid=account_sid,
                    subscription_sid=subscription_sid,
                    type=row[0],
                    schema_version=row[1],
                )
                for row in rows
            ]

        return await self._db.read(job)

    async def add_subscribed_type(self, subscribed: SubscribedType, now: float) -> None:
        def job(conn: sqlite3.Connection) -> None:
            _require_subscription(conn, subscribed.account_sid, subscribed.subscription_sid)
            try:
                conn.execute(
                    "INSERT INTO subscribed_types VALUES (?, ?, ?)",
                    (subscribed.subscription_sid, subscribed.type, subscribed.schema_version),
                )
            except sqlite3.IntegrityError:
                raise AlreadySubscribed(subscribed.type) from None
            self._touch(conn, subscribed.subscription_sid, now)
            _bump(conn, subscribed.account_sid)

        await self._db.write(job)

    async def update_subscribed_type(self, subscribed: SubscribedType, now: float) -> None:
        def job(conn: sqlite3.Connection) -> None:
            _require_subscription(conn, subscribed.account_sid, subscribed.subscription_sid)
            changed = conn.execute(
                "UPDATE subscribed_types SET schema_version = ? "
                "WHERE subscription_sid = ? AND type = ?",
                (subscribed.schema_version, subscribed.subscription_sid, subscribed.type),
            ).rowcount
            if changed == 0:
                raise NotFound(f"{subscribed.subscription_sid} has no type {subscribed.type}")
            self._touch(conn, subscribed.subscription_sid, now)
            _bump(conn, subscribed.account_sid)

        await self._db.write(job)

    async def remove_subscribed_type(
        self, account_sid: str, subscription_sid: str, type_: str, now: float
    ) -> None:
        def job(conn: sqlite3.Connection) -> None:
            _require_subscription(conn, account_sid, subscription_sid)
            removed = conn.execute(
                "DELETE FROM subscribed_types WHERE subscription_sid = ? AND type = ?",
                (subscription_sid, type_),
            ).rowcount
            if removed == 0:
                raise NotFound(f"{subscription_sid} has no type {type_}")
            self._touch(conn, subscription_sid, now)
            _bump(conn, account_sid)

        await self._db.write(job)

    @staticmethod
    def _touch(conn: sqlite3.Connection, subscription_sid: str, now: float) -> None:
        conn.execute(
            "UPDATE subscriptions SET date_updated = ? WHERE sid = ?", (now, subscription_sid)
        )

    # -- for the router and the delivery worker ------------------------------------------------

    async def control_version(self, account_sid: str) -> int:
        def job(conn: sqlite3.Connection) -> int:
            return _version(conn, account_sid)

        return await self._db.read(job)

    async def routing_table(self, account_sid: str) -> RoutingTable:
        def job(conn: sqlite3.Connection) -> RoutingTable:
            version = _version(conn, account_sid)
            columns = ", ".join(f"k.{c.strip()}" for c in _SINK_COLUMNS.split(","))
            rows = conn.execute(
                f"SELECT s.sid, t.type, t.schema_version, {columns} "
                "FROM subscriptions s "
                "JOIN sinks k ON k.sid = s.sink_sid "
                "JOIN subscribed_types t ON t.subscription_sid = s.sid "
                # A failed (or re-tested) sink keeps receiving events: its queue keeps them
                # until it recovers (docs/decisions/0010-delivery-failed-sinks.md).
                "WHERE s.account_sid = ? AND k.status IN ('active', 'failed', 'validating') "
                "ORDER BY s.date_created, s.sid, t.type",
                (account_sid,),
            ).fetchall()
            routes: dict[str, SinkRoute] = {}
            for row in rows:
                route = routes.get(row[0])
                if route is None:
                    route = routes[row[0]] = SinkRoute(
                        sink=_sink(row[3:]), subscription_sid=row[0], types={}
                    )
                route.types[row[1]] = row[2]
            return RoutingTable(
                account_sid=account_sid, version=version, routes=tuple(routes.values())
            )

        return await self._db.read(job)

    async def read_outbox(
        self, after: int, limit: int, *, sink_sid: str | None = None
    ) -> Sequence[OutboxItem]:
        def job(conn: sqlite3.Connection) -> list[OutboxItem]:
            sql = (
                "SELECT id, account_sid, sink_sid, type, schema_version, body, created_at "
                "FROM sink_outbox WHERE id > ?"
            )
            params: list[Any] = [after]
            if sink_sid is not None:
                sql += " AND sink_sid = ?"
                params.append(sink_sid)
            rows = conn.execute(f"{sql} ORDER BY id LIMIT ?", (*params, limit)).fetchall()
            return [
                OutboxItem(
                    id=row[0],
                    account_sid=row[1],
                    sink_sid=row[2],
                    type=row[3],
                    schema_version=row[4],
                    body=bytes(row[5]),
                    created_at=row[6],
                )
                for row in rows
            ]

        return await self._db.read(job)

    async def remove_outbox(self, ids: Sequence[int]) -> None:
        if not ids:
            return

        def job(conn: sqlite3.Connection) -> None:
            conn.executemany("DELETE FROM sink_outbox WHERE id = ?", [(i,) for i in ids])

        await self._db.write(job)

    async def wait_outbox(self, after: int, timeout: float) -> None:
        await self._outbox_written.wait(_OUTBOX, after, timeout)


def _version(conn: sqlite3.Connection, account_sid: str) -> int:
    row = conn.execute(
        "SELECT version FROM control_versions WHERE account_sid = ?", (account_sid,)
    ).fetchone()
    return 0 if row is None else int(row[0])
