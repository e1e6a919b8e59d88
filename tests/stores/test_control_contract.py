"""ControlStore on both backends: sinks, subscriptions, their types, the routing table and
the sink outbox, as store/control.py specifies them (the Event Streams API's integration
tests drive the same rules through HTTP on the embedded backend)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
import pytest

from callstream.store.control import (
    AlreadySubscribed,
    NewOutboxItem,
    NoSinkTest,
    NotFound,
    Sink,
    SinkInUse,
    SinkLimitReached,
    SinkNotActive,
    SinkStatus,
    SubscribedType,
    Subscription,
    Window,
    WrongTestId,
)
from callstream.store.interfaces import Account
from callstream.store.postgres.control import LISTENER_NAME
from tests.stores.conftest import Backend, PostgresBackend, Stores

ACCOUNT = "AC" + "1" * 32
OTHER = "AC" + "2" * 32
TYPE_A = "com.twilio.voice.insights.call-summary.complete"
TYPE_B = "com.twilio.voice.insights.call-event.gateway"
TYPE_C = "com.twilio.voice.insights.call-metrics.gateway"


def sink(
    n: int, account: str = ACCOUNT, *, status: SinkStatus = "initialized", at: float = 0
) -> Sink:
    return Sink(
        sid=f"DG{account[-1]}{n:031x}",
        account_sid=account,
        description=f"sink {n}",
        sink_type="webhook",
        configuration={
            "destination": f"http://127.0.0.1/{n}",
            "method": "POST",
            "batch_events": False,
        },
        status=status,
        date_created=at or float(n),
        date_updated=at or float(n),
    )


def subscription(n: int, sink_sid: str, account: str = ACCOUNT, at: float = 0) -> Subscription:
    return Subscription(
        sid=f"DF{account[-1]}{n:031x}",
        account_sid=account,
        sink_sid=sink_sid,
        description=f"subscription {n}",
        date_created=at or float(n),
        date_updated=at or float(n),
    )


def types(subscription_sid: str, *names: str, account: str = ACCOUNT) -> list[SubscribedType]:
    return [
        SubscribedType(
            account_sid=account, subscription_sid=subscription_sid, type=t, schema_version=1
        )
        for t in names
    ]


def item(n: int = 0) -> NewOutboxItem:
    return NewOutboxItem(
        type="com.twilio.eventstreams.test-sink", schema_version=1, body=bytes([n]) * 3
    )


async def with_accounts(stores: Stores) -> None:
    for sid in (ACCOUNT, OTHER):
        await stores.accounts.create_account(
            Account(sid=sid, auth_token="t" * 32, friendly_name=sid, date_created=0.0)
        )


async def active_sink(stores: Stores, n: int, account: str = ACCOUNT) -> Sink:
    control = stores.control
    await control.create_sink(sink(n, account), max_sinks=100)
    await control.record_sink_test(account, sink(n, account).sid, f"test-{n}", item(n), 10.0)
    return await control.validate_sink(account, sink(n, account).sid, f"test-{n}", 11.0)


def run(backend: Backend, scenario: Any) -> None:
    async def main() -> None:
        async with backend.open() as stores:
            await with_accounts(stores)
            await scenario(stores)

    asyncio.run(main())


def test_sinks_are_created_read_listed_by_page_and_scoped_to_their_account(
    backend: Backend,
) -> None:
    async def scenario(stores: Stores) -> None:
        control = stores.control
        # Two pairs with equal creation times: the SID orders each pair.
        made = [sink(n, at=float(1 + n // 2)) for n in range(1, 7)]
        for s in reversed(made):
            await control.create_sink(s, max_sinks=10)
        await control.create_sink(sink(1, OTHER), max_sinks=10)
        assert await control.get_sink(ACCOUNT, made[0].sid) == made[0]
        assert await control.get_sink(OTHER, made[0].sid) is None
        assert await control.get_sink(ACCOUNT, sink(1, OTHER).sid) is None
        ordered = sorted(made, key=lambda s: s.position)
        assert list(await control.list_sinks(ACCOUNT, Window(limit=10))) == ordered
        first = await control.list_sinks(ACCOUNT, Window(limit=4))
        assert list(first) == ordered[:4]
        rest = await control.list_sinks(ACCOUNT, Window(limit=4, after=first[-1].position))
        assert list(rest) == ordered[4:]
        # A previous page: the rows just before the mark, in ascending order.
        back = await control.list_sinks(ACCOUNT, Window(limit=2, before=rest[0].position))
        assert list(back) == ordered[2:4]
        assert [s.sid for s in await control.list_sinks(OTHER, Window(limit=10))] == [
            sink(1, OTHER).sid
        ]
        # The configuration comes back as given, key order included.
        stored = await control.get_sink(ACCOUNT, made[0].sid)
        assert stored is not None and list(stored.configuration) == [
            "destination",
            "method",
            "batch_events",
        ]

    run(backend, scenario)


def test_the_sink_limit_holds_under_concurrent_creates(backend: Backend) -> None:
    async def scenario(stores: Stores) -> None:
        results = await asyncio.gather(
            *(stores.control.create_sink(sink(n), max_sinks=3) for n in range(1, 9)),
            return_exceptions=True,
        )
        refused = [r for r in results if isinstance(r, SinkLimitReached)]
        assert len(refused) == 5 and refused[0].limit == 3
        assert len(await stores.control.list_sinks(ACCOUNT, Window(limit=10))) == 3
        # Another account's sinks do not count.
        await stores.control.create_sink(sink(1, OTHER), max_sinks=3)

    run(backend, scenario)


def test_sink_filters_by_status_and_use(backend: Backend) -> None:
    async def scenario(stores: Stores) -> None:
        control = stores.control
        used = await active_sink(stores, 1)
        idle = await active_sink(stores, 2)
        await control.create_sink(sink(3), max_sinks=10)
        await control.create_subscription(
            subscription(1, used.sid), types(subscription(1, used.sid).sid, TYPE_A)
        )

        async def sids(**filters: Any) -> list[str]:
            return [s.sid for s in await control.list_sinks(ACCOUNT, Window(limit=10), **filters)]

        assert await sids(status="active") == [used.sid, idle.sid]
        assert await sids(status="initialized") == [sink(3).sid]
        assert await sids(in_use=True) == [used.sid]
        assert await sids(in_use=False) == [idle.sid, sink(3).sid]
        assert await sids(status="active", in_use=False) == [idle.sid]
        assert await sids(status="failed") == []

    run(backend, scenario)


def test_sink_changes_tests_validation_and_status(backend: Backend) -> None:
    async def scenario(stores: Stores) -> None:
        control = stores.control
        s = sink(1)
        await control.create_sink(s, max_sinks=10)
        v0 = await control.control_version(ACCOUNT)
        assert v0 > 0 and await control.control_version(OTHER) == 0
        updated = await control.update_sink(ACCOUNT, s.sid, "renamed", 50.0)
        assert updated.description == "renamed" and updated.date_updated == 50.0
        assert updated.date_created == s.date_created
        # A description is not routing: the version stays.
        assert await control.control_version(ACCOUNT) == v0
        with pytest.raises(NotFound):
            await control.update_sink(OTHER, s.sid, "theirs", 50.0)
        with pytest.raises(NoSinkTest):
            await control.validate_sink(ACCOUNT, s.sid, "never", 51.0)
        tested = await control.record_sink_test(ACCOUNT, s.sid, "t1", item(1), 52.0)
        assert tested.status == "validating" and tested.test_id == "t1"
        assert await control.control_version(ACCOUNT) > v0
        retested = await control.record_sink_test(ACCOUNT, s.sid, "t2", item(2), 53.0)
        assert retested.test_id == "t2"
        with pytest.raises(WrongTestId):
            await control.validate_sink(ACCOUNT, s.sid, "t1", 54.0)
        with pytest.raises(NotFound):
            await control.validate_sink(OTHER, s.sid, "t2", 54.0)
        active = await control.validate_sink(ACCOUNT, s.sid, "t2", 54.0)
        assert active.status == "active" and active.date_updated == 54.0
        v1 = await control.control_version(ACCOUNT)
        again = await control.validate_sink(ACCOUNT, s.sid, "t2", 55.0)  # idempotent
        assert again == active and await control.control_version(ACCOUNT) == v1
        # Testing an active sink keeps it active (its deliveries go on).
        assert (
            await control.record_sink_test(ACCOUNT, s.sid, "t3", item(3), 56.0)
        ).status == "active"
        failed = await control.set_sink_status(ACCOUNT, s.sid, "failed", 57.0)
        assert failed.status == "failed" and await control.control_version(ACCOUNT) > v1
        # A failed sink tested again is validating until validated.
        assert (
            await control.record_sink_test(ACCOUNT, s.sid, "t4", item(4), 58.0)
        ).status == "validating"
        with pytest.raises(NotFound):
            await control.set_sink_status(OTHER, s.sid, "active", 59.0)
        with pytest.raises(NotFound):
            await control.record_sink_test(OTHER, s.sid, "t5", item(5), 59.0)

    run(backend, scenario)


def test_subscriptions_need_an_active_free_sink_of_the_account(backend: Backend) -> None:
    async def scenario(stores: Stores) -> None:
        control = stores.control
        await control.create_sink(sink(1), max_sinks=10)
        sub = subscription(1, sink(1).sid)
        with pytest.raises(SinkNotActive) as not_active:
            await control.create_subscription(sub, types(sub.sid, TYPE_A))
        assert not_active.value.status == "initialized"
        active = await active_sink(stores, 2)
        theirs = await active_sink(stores, 1, OTHER)
        with pytest.raises(NotFound):
            await control.create_subscription(
                subscription(2, theirs.sid), types(subscription(2, theirs.sid).sid, TYPE_A)
            )
        with pytest.raises(NotFound):
            await control.create_subscription(subscription(2, "DG" + "f" * 32), [])
        sub = subscription(2, active.sid)
        await control.create_subscription(sub, types(sub.sid, TYPE_B, TYPE_A))
        assert await control.get_subscription(ACCOUNT, sub.sid) == sub
        assert await control.get_subscription(OTHER, sub.sid) is None
        with pytest.raises(SinkInUse) as in_use:
            second = subscription(3, active.sid)
            await control.create_subscription(second, types(second.sid, TYPE_A))
        assert in_use.value.subscription_sid == sub.sid
        assert await control.get_subscription(ACCOUNT, subscription(3, active.sid).sid) is None
        # A sink in use cannot be deleted; once free it can, and its queued tests go with it.
        with pytest.raises(SinkInUse):
            await control.delete_sink(ACCOUNT, active.sid)
        with pytest.raises(NotFound):
            await control.delete_subscription(OTHER, sub.sid)
        await control.delete_subscription(ACCOUNT, sub.sid)
        assert await control.get_subscription(ACCOUNT, sub.sid) is None
        assert await control.get_sink(ACCOUNT, active.sid) is not None  # the sink stays
        with pytest.raises(NotFound):
            await control.list_subscribed_types(ACCOUNT, sub.sid)
        with pytest.raises(NotFound):
            await control.delete_subscription(ACCOUNT, sub.sid)
        assert [i.sink_sid for i in await control.read_outbox(0, 10)].count(active.sid) == 1
        with pytest.raises(NotFound):
            await control.delete_sink(OTHER, active.sid)
        await control.delete_sink(ACCOUNT, active.sid)
        assert await control.get_sink(ACCOUNT, active.sid) is None
        assert active.sid not in [i.sink_sid for i in await control.read_outbox(0, 10)]
        with pytest.raises(NotFound):
            await control.delete_sink(ACCOUNT, active.sid)

    run(backend, scenario)


def test_subscriptions_list_by_page_and_by_sink_and_change_their_description(
    backend: Backend,
) -> None:
    async def scenario(stores: Stores) -> None:
        control = stores.control
        subs = []
        for n in range(1, 6):
            s = await active_sink(stores, n)
            sub = subscription(n, s.sid, at=float(1 + n // 2))
            await control.create_subscription(sub, types(sub.sid, TYPE_A))
            subs.append(sub)
        ordered = sorted(subs, key=lambda s: s.position)
        page = await control.list_subscriptions(ACCOUNT, Window(limit=3))
        assert list(page) == ordered[:3]
        rest = await control.list_subscriptions(ACCOUNT, Window(limit=3, after=page[-1].position))
        assert list(rest) == ordered[3:]
        back = await control.list_subscriptions(ACCOUNT, Window(limit=3, before=rest[0].position))
        assert list(back) == ordered[:3]
        assert list(
            await control.list_subscriptions(ACCOUNT, Window(limit=9), sink_sid=sink(4).sid)
        ) == [subs[3]]
        assert list(await control.list_subscriptions(OTHER, Window(limit=9))) == []
        version = await control.control_version(ACCOUNT)
        changed = await control.update_subscription(ACCOUNT, subs[0].sid, "new words", 99.0)
        assert changed.description == "new words" and changed.date_updated == 99.0
        assert await control.control_version(ACCOUNT) == version
        with pytest.raises(NotFound):
            await control.update_subscription(OTHER, subs[0].sid, "x", 99.0)

    run(backend, scenario)


def test_subscribed_types_are_added_changed_removed_and_listed_in_order(backend: Backend) -> None:
    async def scenario(stores: Stores) -> None:
        control = stores.control
        s = await active_sink(stores, 1)
        sub = subscription(1, s.sid)
        await control.create_subscription(sub, types(sub.sid, TYPE_B))
        listed = await control.list_subscribed_types(ACCOUNT, sub.sid)
        assert [(t.type, t.schema_version) for t in listed] == [(TYPE_B, 1)]
        with pytest.raises(NotFound):
            await control.list_subscribed_types(OTHER, sub.sid)
        version = await control.control_version(ACCOUNT)
        await control.add_subscribed_type(types(sub.sid, TYPE_A)[0], 20.0)
        assert await control.control_version(ACCOUNT) > version
        touched = await control.get_subscription(ACCOUNT, sub.sid)
        assert touched is not None and touched.date_updated == 20.0
        with pytest.raises(AlreadySubscribed):
            await control.add_subscribed_type(types(sub.sid, TYPE_A)[0], 21.0)
        with pytest.raises(NotFound):
            await control.add_subscribed_type(types(sub.sid, TYPE_C, account=OTHER)[0], 21.0)
        upgraded = SubscribedType(
            account_sid=ACCOUNT, subscription_sid=sub.sid, type=TYPE_A, schema_version=2
        )
        await control.update_subscribed_type(upgraded, 22.0)
        listed = await control.list_subscribed_types(ACCOUNT, sub.sid)
        assert [(t.type, t.schema_version) for t in listed] == [(TYPE_B, 1), (TYPE_A, 2)]
        with pytest.raises(NotFound):
            await control.update_subscribed_type(types(sub.sid, TYPE_C)[0], 23.0)
        with pytest.raises(NotFound):
            await control.remove_subscribed_type(ACCOUNT, sub.sid, TYPE_C, 23.0)
        with pytest.raises(NotFound):
            await control.remove_subscribed_type(OTHER, sub.sid, TYPE_A, 23.0)
        await control.remove_subscribed_type(ACCOUNT, sub.sid, TYPE_B, 24.0)
        listed = await control.list_subscribed_types(ACCOUNT, sub.sid)
        assert [t.type for t in listed] == [TYPE_A]
        touched = await control.get_subscription(ACCOUNT, sub.sid)
        assert touched is not None and touched.date_updated == 24.0

    run(backend, scenario)


def test_the_routing_table_holds_delivering_sinks_with_types_at_one_version(
    backend: Backend,
) -> None:
    async def scenario(stores: Stores) -> None:
        control = stores.control
        empty = await control.routing_table(ACCOUNT)
        assert empty.routes == () and empty.version == await control.control_version(ACCOUNT)
        subs = []
        for n in (1, 2, 3):
            s = await active_sink(stores, n)
            sub = subscription(n, s.sid)
            await control.create_subscription(sub, types(sub.sid, TYPE_B, TYPE_A))
            subs.append(sub)
        theirs = await active_sink(stores, 1, OTHER)
        their_sub = subscription(1, theirs.sid, OTHER)
        await control.create_subscription(their_sub, types(their_sub.sid, TYPE_A, account=OTHER))
        await control.remove_subscribed_type(ACCOUNT, subs[2].sid, TYPE_A, 30.0)
        await control.remove_subscribed_type(ACCOUNT, subs[2].sid, TYPE_B, 30.0)  # no types left
        await control.set_sink_status(ACCOUNT, sink(2).sid, "failed", 31.0)  # still routed
        table = await control.routing_table(ACCOUNT)
        assert table.account_sid == ACCOUNT
        assert table.version == await control.control_version(ACCOUNT)
        assert [(r.subscription_sid, r.sink.sid, r.sink.status) for r in table.routes] == [
            (subs[0].sid, sink(1).sid, "active"),
            (subs[1].sid, sink(2).sid, "failed"),
        ]
        assert table.routes[0].types == {TYPE_A: 1, TYPE_B: 1}
        assert table.routes[0].sink.configuration == sink(1).configuration
        await control.set_sink_status(ACCOUNT, sink(1).sid, "initialized", 32.0)  # not routed
        table = await control.routing_table(ACCOUNT)
        assert [r.subscription_sid for r in table.routes] == [subs[1].sid]
        assert [r.subscription_sid for r in (await control.routing_table(OTHER)).routes] == [
            their_sub.sid
        ]

    run(backend, scenario)


def test_the_outbox_reads_after_a_position_by_sink_and_forgets_removed_items(
    backend: Backend,
) -> None:
    async def scenario(stores: Stores) -> None:
        control = stores.control
        for n in (1, 2):
            await control.create_sink(sink(n), max_sinks=10)
        await control.create_sink(sink(1, OTHER), max_sinks=10)
        await control.record_sink_test(ACCOUNT, sink(1).sid, "a", item(1), 40.0)
        await control.record_sink_test(ACCOUNT, sink(2).sid, "b", item(2), 41.0)
        await control.record_sink_test(OTHER, sink(1, OTHER).sid, "c", item(3), 42.0)
        await control.record_sink_test(ACCOUNT, sink(1).sid, "d", item(4), 43.0)
        queued = await control.read_outbox(0, 10)
        assert [(i.account_sid, i.sink_sid, i.body, i.created_at) for i in queued] == [
            (ACCOUNT, sink(1).sid, item(1).body, 40.0),
            (ACCOUNT, sink(2).sid, item(2).body, 41.0),
            (OTHER, sink(1, OTHER).sid, item(3).body, 42.0),
            (ACCOUNT, sink(1).sid, item(4).body, 43.0),
        ]
        ids = [i.id for i in queued]
        assert ids == sorted(ids) and len(set(ids)) == 4
        assert queued[0].type == item().type and queued[0].schema_version == 1
        assert list(await control.read_outbox(ids[0], 2)) == list(queued[1:3])
        assert [i.id for i in await control.read_outbox(0, 10, sink_sid=sink(1).sid)] == [
            ids[0],
            ids[3],
        ]
        await control.remove_outbox([ids[0], ids[2], 10**9])  # unknown ids are ignored
        await control.remove_outbox([])
        assert [i.id for i in await control.read_outbox(0, 10)] == [ids[1], ids[3]]

    run(backend, scenario)


def test_an_outbox_waiter_times_out_when_nothing_is_queued(backend: Backend) -> None:
    async def scenario(stores: Stores) -> None:
        started = time.monotonic()
        await stores.control.wait_outbox(0, 0.3)
        assert 0.25 <= time.monotonic() - started < 5.0

    run(backend, scenario)


def test_an_outbox_waiter_wakes_when_another_connection_queues_an_item(backend: Backend) -> None:
    """PostgreSQL: the waiter and the writer are separate pools, as separate worker processes
    would be, so only the database's notification can wake the waiter. SQLite: one process."""

    async def main() -> None:
        async with backend.open() as writer, backend.open() as reader:
            await with_accounts(writer)
            await writer.control.create_sink(sink(1), max_sinks=10)
            await writer.control.record_sink_test(ACCOUNT, sink(1).sid, "a", item(1), 1.0)
            (first,) = await reader.control.read_outbox(0, 10)
            # Items already queued wake a waiter at once, even one that was not listening yet.
            await asyncio.wait_for(reader.control.wait_outbox(0, 30.0), 5.0)
            waiter = asyncio.create_task(reader.control.wait_outbox(first.id, 60.0))
            if isinstance(backend, PostgresBackend):
                await listening(backend.url)
            # Nothing new: the waiter is still waiting.
            done, _ = await asyncio.wait({waiter}, timeout=0.3)
            assert not done
            started = time.monotonic()
            await writer.control.record_sink_test(ACCOUNT, sink(1).sid, "b", item(2), 2.0)
            await asyncio.wait_for(waiter, 5.0)
            assert time.monotonic() - started < 5.0
            assert [i.body for i in await reader.control.read_outbox(first.id, 10)] == [
                item(2).body
            ]

    asyncio.run(main())


async def listening(url: str) -> None:
    """Wait (with a deadline) until a session of this database LISTENs to the outbox."""
    deadline = time.monotonic() + 10.0
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            cursor = await conn.execute(
                # Idle after a query: connected, listening, and done reading the outbox.
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = %s AND state = 'idle' AND query <> ''",
                (LISTENER_NAME,),
            )
            row = await cursor.fetchone()
            if row is not None and row[0] > 0:
                return
            await asyncio.sleep(0.05)
    raise AssertionError("no session started listening to the outbox channel")


def test_an_outbox_waiter_survives_its_listener_connection_being_killed(postgres_url: str) -> None:
    """The server ends the listener's session (as a failover or an idle-session reaper would)
    and an item is queued before the listener is back: its notification went nowhere, yet
    the waiter wakes once the listener reconnects, long before its timeout."""
    backend = PostgresBackend(postgres_url)

    async def main() -> None:
        async with backend.open() as writer, backend.open() as reader:
            await with_accounts(writer)
            await writer.control.create_sink(sink(1), max_sinks=10)
            waiter = asyncio.create_task(reader.control.wait_outbox(0, 60.0))
            await listening(postgres_url)
            async with await psycopg.AsyncConnection.connect(
                postgres_url, autocommit=True
            ) as admin:
                cursor = await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = %s",
                    (LISTENER_NAME,),
                )
                assert [row[0] for row in await cursor.fetchall()] == [True]
            await writer.control.record_sink_test(ACCOUNT, sink(1).sid, "a", item(1), 1.0)
            await asyncio.wait_for(waiter, 15.0)
            assert not waiter.cancelled()
            await listening(postgres_url)  # and it listens again

    asyncio.run(main())
