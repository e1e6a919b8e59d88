"""The Event Streams control plane in PostgreSQL (see ``store/control.py``).

Each change is one transaction that first takes the account's advisory lock
(``database.lock_account``), so its checks and effects cannot interleave with another
change of the same account made by any process: the sink limit cannot be overrun by two
concurrent creates, and a subscription cannot land on a sink deleted a moment before. Every
change that alters the routing table bumps the account's ``control_versions`` row in the same
transaction, as the embedded store does.

Waking outbox readers in other processes: ``record_sink_test`` sends a NOTIFY on channel
``callstream_outbox`` with the new item's id, which PostgreSQL delivers when (and only if)
the transaction commits. ``wait_outbox`` listens on one dedicated connection per store
(opened on first use, re-opened when lost). Each time it starts listening it reads the
outbox's highest id once, so items queued before it listened, or while it was reconnecting,
wake waiters too. While no listener can connect, ``wait_outbox`` reads the table and returns
after ``timeout``: a poll, never a missed item.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import msgspec
import psycopg
import structlog

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
from callstream.store.postgres.database import Connection, Pool, lock_account
from callstream.store.signal import HighWater

log = structlog.get_logger(__name__)

OUTBOX_CHANNEL = "callstream_outbox"
LISTENER_NAME = "callstream-outbox-listener"
"""The listener connection's ``application_name``, as ``pg_stat_activity`` shows it."""
_OUTBOX = "outbox"  # the HighWater stream that wakes this process's outbox readers
_RELISTEN_DELAY = 1.0  # seconds between attempts to re-open a lost listener connection

_SINK_COLUMNS = (
    "sid, account_sid, description, sink_type, configuration, status, test_id, "
    "date_created, date_updated"
)
_SUBSCRIPTION_COLUMNS = "sid, account_sid, sink_sid, description, date_created, date_updated"
_OUTBOX_COLUMNS = "id, account_sid, sink_sid, type, schema_version, body, created_at"

_json_encoder = msgspec.json.Encoder()


def _sink(row: Sequence[Any]) -> Sink:
    return Sink(
        sid=row[0],
        account_sid=row[1],
        description=row[2],
        sink_type=row[3],
        configuration=row[4],  # a json column: psycopg hands back the decoded object
        status=row[5],
        test_id=row[6],
        date_created=row[7],
        date_updated=row[8],
    )


def _subscription(row: Sequence[Any]) -> Subscription:
    return Subscription(
        sid=row[0],
        account_sid=row[1],
        sink_sid=row[2],
        description=row[3],
        date_created=row[4],
        date_updated=row[5],
    )


async def _bump(conn: Connection, account_sid: str) -> None:
    await conn.execute(
        "INSERT INTO control_versions (account_sid, version) VALUES (%s, 1) "
        "ON CONFLICT (account_sid) DO UPDATE SET version = control_versions.version + 1",
        (account_sid,),
    )


async def _select_sink(conn: Connection, account_sid: str, sid: str) -> Sink | None:
    cursor = await conn.execute(
        f"SELECT {_SINK_COLUMNS} FROM sinks WHERE account_sid = %s AND sid = %s",
        (account_sid, sid),
    )
    row = await cursor.fetchone()
    return None if row is None else _sink(row)


async def _select_subscription(conn: Connection, account_sid: str, sid: str) -> Subscription | None:
    cursor = await conn.execute(
        f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE account_sid = %s AND sid = %s",
        (account_sid, sid),
    )
    row = await cursor.fetchone()
    return None if row is None else _subscription(row)


async def _require_sink(conn: Connection, account_sid: str, sid: str) -> Sink:
    sink = await _select_sink(conn, account_sid, sid)
    if sink is None:
        raise NotFound(f"no sink {sid}")
    return sink


async def _require_subscription(conn: Connection, account_sid: str, sid: str) -> Subscription:
    subscription = await _select_subscription(conn, account_sid, sid)
    if subscription is None:
        raise NotFound(f"no subscription {sid}")
    return subscription


async def _sink_user(conn: Connection, sink_sid: str) -> str | None:
    cursor = await conn.execute("SELECT sid FROM subscriptions WHERE sink_sid = %s", (sink_sid,))
    row = await cursor.fetchone()
    return None if row is None else str(row[0])


async def _windowed(
    conn: Connection, select: str, where: list[str], params: list[Any], window: Window
) -> list[tuple[Any, ...]]:
    """Rows of ``select`` in (date_created, sid) order within ``window``, ascending."""
    where = list(where)
    params = list(params)
    descending = window.before is not None and window.after is None
    if window.after is not None:
        where.append("(date_created, sid) > (%s, %s)")
        params.extend(window.after)
    if window.before is not None:
        where.append("(date_created, sid) < (%s, %s)")
        params.extend(window.before)
    order = "DESC" if descending else "ASC"
    sql = (
        f"{select} WHERE {' AND '.join(where)} ORDER BY date_created {order}, sid {order} LIMIT %s"
    )
    cursor = await conn.execute(sql, (*params, window.limit))
    rows = await cursor.fetchall()
    # A previous page is the rows just before the mark: read backwards, answer forwards.
    return rows[::-1] if descending else rows


async def _newest_outbox_id(conn: Connection) -> int:
    cursor = await conn.execute("SELECT coalesce(max(id), 0) FROM sink_outbox")
    row = await cursor.fetchone()
    return 0 if row is None else int(row[0])


async def _version(conn: Connection, account_sid: str) -> int:
    cursor = await conn.execute(
        "SELECT version FROM control_versions WHERE account_sid = %s", (account_sid,)
    )
    row = await cursor.fetchone()
    return 0 if row is None else int(row[0])


class PostgresControlStore:
    """``ControlStore`` on PostgreSQL. ``conninfo`` is for the outbox listener's own
    connection (LISTEN holds a session, so it cannot borrow from the pool)."""

    def __init__(self, pool: Pool, conninfo: str) -> None:
        self._pool = pool
        self._conninfo = conninfo
        self._outbox_written = HighWater()
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    async def aclose(self) -> None:
        """Stop the outbox listener (the pool is its owner's to close)."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None

    # -- sinks --------------------------------------------------------------------------------

    async def create_sink(self, sink: Sink, *, max_sinks: int) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            await lock_account(conn, sink.account_sid)
            cursor = await conn.execute(
                "SELECT count(*) FROM sinks WHERE account_sid = %s", (sink.account_sid,)
            )
            row = await cursor.fetchone()
            if row is not None and row[0] >= max_sinks:
                raise SinkLimitReached(max_sinks)
            await conn.execute(
                f"INSERT INTO sinks ({_SINK_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s::json, %s, %s, %s, %s)",
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
            await _bump(conn, sink.account_sid)

    async def get_sink(self, account_sid: str, sid: str) -> Sink | None:
        async with self._pool.connection() as conn:
            return await _select_sink(conn, account_sid, sid)

    async def list_sinks(
        self,
        account_sid: str,
        window: Window,
        *,
        status: SinkStatus | None = None,
        in_use: bool | None = None,
    ) -> Sequence[Sink]:
        where = ["account_sid = %s"]
        params: list[Any] = [account_sid]
        if status is not None:
            where.append("status = %s")
            params.append(status)
        if in_use is not None:
            used = "EXISTS (SELECT 1 FROM subscriptions s WHERE s.sink_sid = sinks.sid)"
            where.append(used if in_use else f"NOT {used}")
        async with self._pool.connection() as conn:
            select = f"SELECT {_SINK_COLUMNS} FROM sinks"
            return [_sink(row) for row in await _windowed(conn, select, where, params, window)]

    async def update_sink(self, account_sid: str, sid: str, description: str, now: float) -> Sink:
        async with self._pool.connection() as conn, conn.transaction():
            await _require_sink(conn, account_sid, sid)
            await conn.execute(
                "UPDATE sinks SET description = %s, date_updated = %s WHERE sid = %s",
                (description, now, sid),
            )
            return await _require_sink(conn, account_sid, sid)

    async def delete_sink(self, account_sid: str, sid: str) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            await lock_account(conn, account_sid)
            await _require_sink(conn, account_sid, sid)
            user = await _sink_user(conn, sid)
            if user is not None:
                raise SinkInUse(user)
            await conn.execute("DELETE FROM sinks WHERE sid = %s", (sid,))
            await _bump(conn, account_sid)

    async def record_sink_test(
        self, account_sid: str, sid: str, test_id: str, item: NewOutboxItem, now: float
    ) -> Sink:
        async with self._pool.connection() as conn, conn.transaction():
            await lock_account(conn, account_sid)
            sink = await _require_sink(conn, account_sid, sid)
            status = sink.status if sink.status in ("active", "validating") else "validating"
            await conn.execute(
                "UPDATE sinks SET test_id = %s, status = %s, date_updated = %s WHERE sid = %s",
                (test_id, status, now, sid),
            )
            cursor = await conn.execute(
                "INSERT INTO sink_outbox "
                "(account_sid, sink_sid, type, schema_version, body, created_at) "
                "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (account_sid, sid, item.type, item.schema_version, item.body, now),
            )
            row = await cursor.fetchone()
            item_id = 0 if row is None else int(row[0])
            # Delivered to listeners on commit, to none if the transaction rolls back.
            await conn.execute("SELECT pg_notify(%s, %s)", (OUTBOX_CHANNEL, str(item_id)))
            await _bump(conn, account_sid)
            sink = await _require_sink(conn, account_sid, sid)
        # This process's waiters need not wait for the notification's round trip.
        await self._outbox_written.advance({_OUTBOX: item_id})
        return sink

    async def validate_sink(self, account_sid: str, sid: str, test_id: str, now: float) -> Sink:
        async with self._pool.connection() as conn, conn.transaction():
            await lock_account(conn, account_sid)
            sink = await _require_sink(conn, account_sid, sid)
            if sink.test_id is None:
                raise NoSinkTest(f"sink {sid} has not been tested")
            if sink.test_id != test_id:
                raise WrongTestId(f"{test_id!r} is not the latest test of sink {sid}")
            if sink.status != "active":
                await conn.execute(
                    "UPDATE sinks SET status = 'active', date_updated = %s WHERE sid = %s",
                    (now, sid),
                )
                await _bump(conn, account_sid)
            return await _require_sink(conn, account_sid, sid)

    async def set_sink_status(
        self, account_sid: str, sid: str, status: SinkStatus, now: float
    ) -> Sink:
        async with self._pool.connection() as conn, conn.transaction():
            await lock_account(conn, account_sid)
            await _require_sink(conn, account_sid, sid)
            await conn.execute(
                "UPDATE sinks SET status = %s, date_updated = %s WHERE sid = %s",
                (status, now, sid),
            )
            await _bump(conn, account_sid)
            return await _require_sink(conn, account_sid, sid)

    # -- subscriptions -----------------------------------------------------------------------

    async def create_subscription(
        self, subscription: Subscription, types: Sequence[SubscribedType]
    ) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            await lock_account(conn, subscription.account_sid)
            sink = await _require_sink(conn, subscription.account_sid, subscription.sink_sid)
            if sink.status != "active":
                raise SinkNotActive(sink.status)
            user = await _sink_user(conn, sink.sid)
            if user is not None:
                raise SinkInUse(user)
            await conn.execute(
                f"INSERT INTO subscriptions ({_SUBSCRIPTION_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (
                    subscription.sid,
                    subscription.account_sid,
                    subscription.sink_sid,
                    subscription.description,
                    subscription.date_created,
                    subscription.date_updated,
                ),
            )
            async with conn.cursor() as cursor:
                await cursor.executemany(
                    "INSERT INTO subscribed_types (subscription_sid, type, schema_version) "
                    "VALUES (%s, %s, %s)",
                    [(subscription.sid, t.type, t.schema_version) for t in types],
                )
            await _bump(conn, subscription.account_sid)

    async def get_subscription(self, account_sid: str, sid: str) -> Subscription | None:
        async with self._pool.connection() as conn:
            return await _select_subscription(conn, account_sid, sid)

    async def list_subscriptions(
        self, account_sid: str, window: Window, *, sink_sid: str | None = None
    ) -> Sequence[Subscription]:
        where = ["account_sid = %s"]
        params: list[Any] = [account_sid]
        if sink_sid is not None:
            where.append("sink_sid = %s")
            params.append(sink_sid)
        async with self._pool.connection() as conn:
            select = f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions"
            rows = await _windowed(conn, select, where, params, window)
        return [_subscription(row) for row in rows]

    async def update_subscription(
        self, account_sid: str, sid: str, description: str, now: float
    ) -> Subscription:
        async with self._pool.connection() as conn, conn.transaction():
            await _require_subscription(conn, account_sid, sid)
            await conn.execute(
                "UPDATE subscriptions SET description = %s, date_updated = %s WHERE sid = %s",
                (description, now, sid),
            )
            return await _require_subscription(conn, account_sid, sid)

    async def delete_subscription(self, account_sid: str, sid: str) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            await lock_account(conn, account_sid)
            await _require_subscription(conn, account_sid, sid)
            await conn.execute("DELETE FROM subscriptions WHERE sid = %s", (sid,))
            await _bump(conn, account_sid)

    # -- a subscription's event types ---------------------------------------------------------

    async def list_subscribed_types(
        self, account_sid: str, subscription_sid: str
    ) -> Sequence[SubscribedType]:
        async with self._pool.connection() as conn, conn.transaction():
            await _require_subscription(conn, account_sid, subscription_sid)
            cursor = await conn.execute(
                "SELECT type, schema_version FROM subscribed_types "
                "WHERE subscription_sid = %s ORDER BY type",
                (subscription_sid,),
            )
            rows = await cursor.fetchall()
        return [
            SubscribedType(
                account_sid=account_sid,
                subscription_sid=subscription_sid,
                type=row[0],
                schema_version=row[1],
            )
            for row in rows
        ]

    async def add_subscribed_type(self, subscribed: SubscribedType, now: float) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            await lock_account(conn, subscribed.account_sid)
            await _require_subscription(conn, subscribed.account_sid, subscribed.subscription_sid)
            cursor = await conn.execute(
                "INSERT INTO subscribed_types (subscription_sid, type, schema_version) "
                "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                (subscribed.subscription_sid, subscribed.type, subscribed.schema_version),
            )
            if cursor.rowcount == 0:
                raise AlreadySubscribed(subscribed.type)
            await self._touch(conn, subscribed.subscription_sid, now)
            await _bump(conn, subscribed.account_sid)

    async def update_subscribed_type(self, subscribed: SubscribedType, now: float) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            await lock_account(conn, subscribed.account_sid)
            await _require_subscription(conn, subscribed.account_sid, subscribed.subscription_sid)
            cursor = await conn.execute(
                "UPDATE subscribed_types SET schema_version = %s "
                "WHERE subscription_sid = %s AND type = %s",
                (subscribed.schema_version, subscribed.subscription_sid, subscribed.type),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"{subscribed.subscription_sid} has no type {subscribed.type}")
            await self._touch(conn, subscribed.subscription_sid, now)
            await _bump(conn, subscribed.account_sid)

    async def remove_subscribed_type(
        self, account_sid: str, subscription_sid: str, type_: str, now: float
    ) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            await lock_account(conn, account_sid)
            await _require_subscription(conn, account_sid, subscription_sid)
            cursor = await conn.execute(
                "DELETE FROM subscribed_types WHERE subscription_sid = %s AND type = %s",
                (subscription_sid, type_),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"{subscription_sid} has no type {type_}")
            await self._touch(conn, subscription_sid, now)
            await _bump(conn, account_sid)

    @staticmethod
    async def _touch(conn: Connection, subscription_sid: str, now: float) -> None:
        await conn.execute(
            "UPDATE subscriptions SET date_updated = %s WHERE sid = %s", (now, subscription_sid)
        )

    # -- for the router and the delivery worker ------------------------------------------------

    async def control_version(self, account_sid: str) -> int:
        async with self._pool.connection() as conn:
            return await _version(conn, account_sid)

    async def routing_table(self, account_sid: str) -> RoutingTable:
        columns = ", ".join(f"k.{c.strip()}" for c in _SINK_COLUMNS.split(","))
        # One snapshot for the version and the routes, as the embedded store reads them.
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            version = await _version(conn, account_sid)
            cursor = await conn.execute(
                f"SELECT s.sid, t.type, t.schema_version, {columns} "
                "FROM subscriptions s "
                "JOIN sinks k ON k.sid = s.sink_sid "
                "JOIN subscribed_types t ON t.subscription_sid = s.sid "
                # A failed (or re-tested) sink keeps receiving events: its queue keeps
                # them until it recovers (docs/decisions, delivery-failed-sinks).
                "WHERE s.account_sid = %s "
                "AND k.status IN ('active', 'failed', 'validating') "
                "ORDER BY s.date_created, s.sid, t.type",
                (account_sid,),
            )
            rows = await cursor.fetchall()
        routes: dict[str, SinkRoute] = {}
        for row in rows:
            route = routes.get(row[0])
            if route is None:
                route = routes[row[0]] = SinkRoute(
                    sink=_sink(row[3:]), subscription_sid=row[0], types={}
                )
            route.types[row[1]] = row[2]
        return RoutingTable(account_sid=account_sid, version=version, routes=tuple(routes.values()))

    async def read_outbox(
        self, after: int, limit: int, *, sink_sid: str | None = None
    ) -> Sequence[OutboxItem]:
        sql = f"SELECT {_OUTBOX_COLUMNS} FROM sink_outbox WHERE id > %s"
        params: list[Any] = [after]
        if sink_sid is not None:
            sql += " AND sink_sid = %s"
            params.append(sink_sid)
        async with self._pool.connection() as conn:
            cursor = await conn.execute(f"{sql} ORDER BY id LIMIT %s", (*params, limit))
            rows = await cursor.fetchall()
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

    async def remove_outbox(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        async with self._pool.connection() as conn:
            await conn.execute("DELETE FROM sink_outbox WHERE id = ANY(%s)", (list(ids),))

    async def wait_outbox(self, after: int, timeout: float) -> None:
        self._start_listener()
        if self._outbox_written.get(_OUTBOX) > after:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), timeout)
        if not self._listening.is_set():
            # No listener (the database refuses a connection just now): answer from the table,
            # so a waiter polls once per ``timeout`` rather than sleeping through items.
            async with self._pool.connection() as conn:
                await self._outbox_written.advance({_OUTBOX: await _newest_outbox_id(conn)})
            return
        remaining = deadline - loop.time()
        if remaining > 0:
            await self._outbox_written.wait(_OUTBOX, after, remaining)

    def _start_listener(self) -> None:
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="outbox-listener")

    async def _listen(self) -> None:
        """Follow the outbox channel for as long as the store is open, reconnecting.

        After each LISTEN the table's newest id is read once: items queued before this
        listener existed, or while it was reconnecting (their notifications went nowhere),
        wake the waiters all the same.
        """
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, application_name=LISTENER_NAME
                )
                async with conn:
                    await conn.execute(f"LISTEN {OUTBOX_CHANNEL}")
                    newest = await _newest_outbox_id(conn)
                    await self._outbox_written.advance({_OUTBOX: newest})
                    self._listening.set()
                    async for notify in conn.notifies():
                        with contextlib.suppress(ValueError):
                            await self._outbox_written.advance({_OUTBOX: int(notify.payload)})
            except (psycopg.Error, OSError) as exc:
                log.warning("outbox listener lost its connection; reconnecting", error=str(exc))
            self._listening.clear()
            await asyncio.sleep(_RELISTEN_DELAY)
