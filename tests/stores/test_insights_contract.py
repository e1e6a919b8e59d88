"""InsightsStore on both backends, fed as each backend feeds it in production: SQLite through
the engine's commit, PostgreSQL through ``index`` (the distributed indexer's call). The
cases of tests/unit/test_voice_insights_store.py, plus every filter, active calls, and
indexing a batch twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import msgspec

from callstream.insights.engine import output_event
from callstream.model.insights import (
    CallEvent,
    CallMetric,
    CallParty,
    CallSummary,
    CallTag,
    Edge,
    InsightEvent,
    SummaryProperties,
    Trust,
    VerifiedCaller,
)
from callstream.store.insights import Position, SummaryFilter, Window
from tests.stores.conftest import Backend, PostgresBackend, Stores

ACCOUNT = "AC" + "1" * 32
OTHER = "AC" + "2" * 32
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def call(n: int) -> str:
    return f"CA{n:032x}"


def summary(n: int, version: int, account: str = ACCOUNT, **changes: Any) -> CallSummary:
    base = CallSummary(
        account_sid=account,
        call_sid=call(n),
        time=T0,
        kind="partial",
        processing_state="partial",
        processing_version=version,
        call_type="carrier",
        call_state="completed",
        start_time=T0 + timedelta(seconds=n),
        end_time=T0 + timedelta(seconds=100 - n),
        from_=CallParty(caller=f"+1555000{n:04d}", country_code="US"),
        to=CallParty(callee="+442071234567", country_code="GB"),
        properties=SummaryProperties(direction="inbound", last_sip_response_num=200),
    )
    return msgspec.structs.replace(base, **changes)


def event(
    n: int, seq: int, *, account: str = ACCOUNT, at: float = 0.0, edge: Edge = "sip_edge"
) -> CallEvent:
    return CallEvent(
        account_sid=account,
        call_sid=call(n),
        time=T0 + timedelta(seconds=at or seq),
        seq=seq,
        edge=edge,
        group="connection",
        name=f"e{seq}",
    )


async def feed(stores: Stores, *events: InsightEvent) -> None:
    await stores.index([output_event(e) for e in events])


def run(backend: Backend, scenario: Any) -> None:
    async def main() -> None:
        async with backend.open() as stores:
            await scenario(stores)

    asyncio.run(main())


async def listed(stores: Stores, where: SummaryFilter, sort: Any = "start_time") -> list[str]:
    rows = await stores.insights.summaries(ACCOUNT, where, sort, Window(50))
    return [row.key[1] for row in rows.rows]


def test_the_latest_processing_version_wins_whatever_the_index_order(backend: Backend) -> None:
    tags: tuple[CallTag, ...] = ("high_jitter", "silence")

    async def scenario(stores: Stores) -> None:
        store = stores.insights
        await feed(stores, summary(1, 2, tags=tags))
        await feed(stores, summary(1, 1))  # older, late: ignored
        await feed(stores, summary(1, 2, tags=tags))  # a replay: ignored
        latest = await store.latest_summary(ACCOUNT, call(1))
        assert latest is not None
        decoded = msgspec.msgpack.decode(latest.body, type=CallSummary)
        assert decoded.processing_version == 2 and decoded.tags == tags
        assert await listed(stores, SummaryFilter(tags=frozenset({"silence"}))) == [call(1)]
        done = summary(1, 3, kind="complete", processing_state="complete", tags=("low_mos",))
        await feed(stores, done)
        assert await listed(stores, SummaryFilter(tags=frozenset({"silence"}))) == []
        assert await listed(stores, SummaryFilter(tags=frozenset({"low_mos"}))) == [call(1)]
        states = SummaryFilter(processing_states=frozenset({"complete"}))
        assert await listed(stores, states) == [call(1)]
        latest = await store.latest_summary(ACCOUNT, call(1))
        assert latest is not None and latest.type.endswith("call-summary.complete")

    run(backend, scenario)


def test_every_query_is_scoped_to_its_account(backend: Backend) -> None:
    async def scenario(stores: Stores) -> None:
        store = stores.insights
        await feed(stores, summary(1, 1), event(1, 1), event(2, 1))
        assert await store.has_call(ACCOUNT, call(1))
        assert not await store.has_call(OTHER, call(1))
        assert not await store.has_call(ACCOUNT, call(3))
        assert await store.latest_summary(OTHER, call(1)) is None
        rows = await store.summaries(OTHER, SummaryFilter(), "start_time", Window(10))
        assert rows.rows == [] and not rows.more
        assert (await store.call_events(OTHER, call(1), None, Window(10))).rows == []
        assert (await store.active_calls(OTHER, 10)).total == 0
        # The same call SID in another account is another call.
        await feed(stores, summary(1, 5, account=OTHER, call_type="sip"))
        mine = await store.latest_summary(ACCOUNT, call(1))
        assert mine is not None and mine.account_sid == ACCOUNT
        assert await listed(stores, SummaryFilter(call_types=frozenset({"sip"}))) == []

    run(backend, scenario)


def test_keyset_pages_cover_every_row_once_in_both_directions(backend: Backend) -> None:
    # Ties on the sort key: call SIDs break them, so no row is skipped or repeated.
    calls = [summary(n, 1, start_time=T0 + timedelta(seconds=n // 3)) for n in range(1, 11)]

    async def scenario(stores: Stores) -> None:
        store = stores.insights
        await feed(stores, *calls)
        pages: list[list[tuple[float, str]]] = []
        window: Window[Any] = Window(3)
        while True:
            rows = await store.summaries(ACCOUNT, SummaryFilter(), "start_time", window)
            pages.append([row.key for row in rows.rows])
            if not rows.more:
                break
            window = Window(3, Position("after", rows.rows[-1].key))
        keys = [key[1] for page in pages for key in page]
        newest_first = sorted(calls, key=lambda s: (s.start_time, s.call_sid), reverse=True)
        assert keys == [s.call_sid for s in newest_first]
        assert [len(page) for page in pages] == [3, 3, 3, 1]
        # Reading back from each page's first row gives the page before it, in list order.
        for previous, page in pairwise(pages):
            back = Window(3, Position("before", page[0]))
            rows = await store.summaries(ACCOUNT, SummaryFilter(), "start_time", back)
            assert [row.key for row in rows.rows] == previous
            assert rows.more == (previous is not pages[0])
        # By end time: summary n ends at 100 - n, so the newest end is call 1's.
        assert await listed(stores, SummaryFilter(), "end_time") == [call(n) for n in range(1, 11)]

    run(backend, scenario)


def test_events_and_metrics_filter_by_edge_and_direction(backend: Backend) -> None:
    events = [
        CallEvent(
            account_sid=ACCOUNT,
            call_sid=call(1),
            time=T0 + timedelta(seconds=10 - seq),  # indexed newest first
            seq=seq,
            edge="sip_edge" if seq % 2 else "sdk_edge",
            group="connection",
            name=f"e{seq}",
        )
        for seq in range(6)
    ]
    metrics = [
        CallMetric(
            account_sid=ACCOUNT,
            call_sid=call(1),
            time=T0 + timedelta(seconds=10 * (n + 1)),
            window_start=T0 + timedelta(seconds=10 * n),
            edge="carrier_edge" if n < 2 else "sip_edge",
            direction="inbound" if n % 2 else "outbound",
        )
        for n in range(4)
    ]

    async def scenario(stores: Stores) -> None:
        store = stores.insights
        await feed(stores, *events, *metrics)
        every = await store.call_events(ACCOUNT, call(1), None, Window(50))
        times = [row.key[0] for row in every.rows]
        assert times == sorted(times) and len(times) == 6  # oldest first
        sip = await store.call_events(ACCOUNT, call(1), "sip_edge", Window(50))
        assert len(sip.rows) == 3 and all("sip_edge" in r.event.identity for r in sip.rows)
        inbound = await store.call_metrics(ACCOUNT, call(1), None, "inbound", Window(50))
        assert [r.event.identity.split("/")[1:3] for r in inbound.rows] == [
            ["carrier_edge", "inbound"],
            ["sip_edge", "inbound"],
        ]
        one = await store.call_metrics(ACCOUNT, call(1), "sip_edge", "outbound", Window(50))
        assert [r.event.identity.split("/")[1:3] for r in one.rows] == [["sip_edge", "outbound"]]
        assert (await store.call_metrics(ACCOUNT, call(1), "sdk_edge", None, Window(5))).rows == []
        # Pages of events by (time, offset), forwards and back.
        first = await store.call_events(ACCOUNT, call(1), None, Window(4))
        assert first.more and [r.key for r in first.rows] == [r.key for r in every.rows[:4]]
        rest = await store.call_events(
            ACCOUNT, call(1), None, Window(4, Position("after", first.rows[-1].key))
        )
        assert not rest.more and [r.key for r in rest.rows] == [r.key for r in every.rows[4:]]
        back = await store.call_events(
            ACCOUNT, call(1), None, Window(4, Position("before", rest.rows[0].key))
        )
        assert not back.more and [r.event for r in back.rows] == [r.event for r in first.rows]
        # Rows carry the event as stored, body included.
        decoded = msgspec.msgpack.decode(every.rows[0].event.body, type=CallEvent)
        assert decoded == events[5]

    run(backend, scenario)


def test_every_summary_filter_matches_as_specified(backend: Backend) -> None:
    calls = [
        summary(1, 1),
        summary(
            2,
            1,
            call_type="sip",
            call_state="busy",
            answered_by="human",
            from_=CallParty(caller="+15550000002", carrier="Acme", country_code="CA"),
            to=CallParty(callee="+15551112222", carrier="Beta", country_code="US"),
            properties=SummaryProperties(direction="outbound_api", last_sip_response_num=486),
            trust=Trust(verified_caller=VerifiedCaller(verified=True)),
            tags=("high_latency", "silence"),
        ),
        summary(
            3, 1, tags=("silence",), trust=Trust(verified_caller=VerifiedCaller(verified=False))
        ),
        summary(4, 2, kind="complete", processing_state="complete", properties=None),
    ]

    async def scenario(stores: Stores) -> None:
        await feed(stores, *calls)

        async def only(**where: Any) -> list[str]:
            return sorted(await listed(stores, SummaryFilter(**where)))

        assert await only() == [call(n) for n in (1, 2, 3, 4)]
        assert await only(caller="+15550000002") == [call(2)]
        assert await only(callee="+442071234567") == [call(1), call(3), call(4)]
        assert await only(from_carrier="Acme") == [call(2)]
        assert await only(to_carrier="Beta") == [call(2)]
        assert await only(from_country_code="CA") == [call(2)]
        assert await only(to_country_code="GB") == [call(1), call(3), call(4)]
        assert await only(call_types=frozenset({"sip", "trunking"})) == [call(2)]
        assert await only(call_states=frozenset({"busy", "completed"})) == [
            call(n) for n in (1, 2, 3, 4)
        ]
        assert await only(call_states=frozenset({"busy"})) == [call(2)]
        assert await only(directions=frozenset({"outbound_api"})) == [call(2)]
        assert await only(directions=frozenset({"inbound"})) == [call(1), call(3)]
        assert await only(answered_by=frozenset({"human"})) == [call(2)]
        assert await only(processing_states=frozenset({"complete"})) == [call(4)]
        assert await only(has_tag=True) == [call(2), call(3)]
        assert await only(has_tag=False) == [call(1), call(4)]
        assert await only(tags=frozenset({"silence"})) == [call(2), call(3)]
        assert await only(tags=frozenset({"silence", "high_latency"})) == [call(2)]
        assert await only(verified_caller=True) == [call(2)]
        assert await only(verified_caller=False) == [call(3)]
        assert await only(abnormal_session=True) == [call(2)]
        assert await only(abnormal_session=False) == [call(1), call(3), call(4)]
        assert await only(caller="+15550000002", call_types=frozenset({"carrier"})) == []
        # Start times are T0+1 .. T0+4 s: a half-open window [from, before).
        start = T0.timestamp()
        assert await only(started_from=start + 2, started_before=start + 4) == [call(2), call(3)]
        assert await only(started_from=start + 4) == [call(4)]
        assert await only(started_before=start + 1) == []

    run(backend, scenario)


def test_active_calls_are_those_with_events_and_no_summary_most_recent_first(
    backend: Backend,
) -> None:
    async def scenario(stores: Stores) -> None:
        store = stores.insights
        assert (await store.active_calls(ACCOUNT, 10)).total == 0
        await feed(stores, event(1, 1, at=5), event(1, 2, at=3))  # first by arrival: time 5
        await feed(stores, event(2, 1, at=7))
        await feed(stores, event(3, 1, at=8), event(1, 3, at=9))
        await feed(stores, event(4, 1, account=OTHER))
        active = await store.active_calls(ACCOUNT, 10)
        assert active.total == 3
        assert [(c.call_sid, c.first_event_time, c.last_event_time) for c in active.calls] == [
            (call(1), T0.timestamp() + 5, T0.timestamp() + 9),
            (call(3), T0.timestamp() + 8, T0.timestamp() + 8),
            (call(2), T0.timestamp() + 7, T0.timestamp() + 7),
        ]
        limited = await store.active_calls(ACCOUNT, 1)
        assert limited.total == 3 and [c.call_sid for c in limited.calls] == [call(1)]
        await feed(stores, summary(1, 1))
        await feed(stores, event(1, 4, at=20))  # a late event does not make it active again
        active = await store.active_calls(ACCOUNT, 10)
        assert active.total == 2 and [c.call_sid for c in active.calls] == [call(3), call(2)]
        # A call whose first events come with its summary is never active.
        await feed(stores, event(5, 1), summary(5, 1))
        assert (await store.active_calls(ACCOUNT, 10)).total == 2
        assert [c.call_sid for c in (await store.active_calls(OTHER, 10)).calls] == [call(4)]

    run(backend, scenario)


def test_indexing_a_batch_again_stores_nothing_twice(backend: Backend) -> None:
    batch: list[InsightEvent] = [
        *(event(1, n) for n in range(1, 4)),
        summary(1, 1, tags=("silence",)),
        event(2, 1),
    ]

    async def scenario(stores: Stores) -> None:
        store = stores.insights
        await feed(stores, *batch)
        before = await store.call_events(ACCOUNT, call(1), None, Window(50))
        active = await store.active_calls(ACCOUNT, 10)
        await feed(stores, *batch)  # redelivered after a crash
        await feed(stores, *batch[1:3])
        again = await store.call_events(ACCOUNT, call(1), None, Window(50))
        assert [r.key for r in again.rows] == [r.key for r in before.rows] and len(again.rows) == 3
        assert await store.active_calls(ACCOUNT, 10) == active
        assert await listed(stores, SummaryFilter()) == [call(1)]
        assert await listed(stores, SummaryFilter(tags=frozenset({"silence"}))) == [call(1)]

    run(backend, scenario)


def test_a_batch_may_hold_the_same_event_twice(postgres_url: str) -> None:
    """PostgreSQL only: the engine never commits one event twice in a step, but the
    distributed indexer may read a batch that holds a redelivered event."""

    async def scenario(stores: Stores) -> None:
        await feed(stores, event(1, 1), event(1, 1), summary(1, 1), summary(1, 1))
        assert len((await stores.insights.call_events(ACCOUNT, call(1), None, Window(9))).rows) == 1
        assert await listed(stores, SummaryFilter()) == [call(1)]
        assert (await stores.insights.active_calls(ACCOUNT, 9)).total == 0

    run(PostgresBackend(postgres_url), scenario)


def test_two_indexers_given_the_same_batches_at_once_store_each_event_once(
    postgres_url: str,
) -> None:
    """PostgreSQL only: a redelivered batch may reach a second indexer process while the
    first still holds it. Both commit (one waits on the other's rows) and nothing doubles."""
    backend = PostgresBackend(postgres_url)
    batches: list[list[InsightEvent]] = [
        [
            *(event(n, seq) for n in range(1, 6) for seq in range(start, start + 5)),
            *(summary(n, start) for n in range(1, 6) if start > 1),
        ]
        for start in (1, 6, 11)
    ]

    async def main() -> None:
        async with backend.open() as one, backend.open() as two:
            for batch in batches:
                await asyncio.gather(feed(one, *batch), feed(two, *batch), feed(one, *batch[3:]))
            for n in range(1, 6):
                rows = await one.insights.call_events(ACCOUNT, call(n), None, Window(100))
                assert [r.event.identity for r in rows.rows] == [
                    f"event/sip_edge/{seq}" for seq in range(1, 16)
                ]
                latest = await one.insights.latest_summary(ACCOUNT, call(n))
                assert latest is not None and latest.identity == "summary/partial/11"
            assert (await one.insights.active_calls(ACCOUNT, 10)).total == 0

    asyncio.run(main())
