"""The Voice Insights read store on SQLite, fed through the engine's own commit path."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import msgspec
import pytest

from callstream.api.voice_insights import parse_moment
from callstream.insights.engine import output_event
from callstream.model.insights import (
    EDGES,
    CallEvent,
    CallMetric,
    CallParty,
    CallSummary,
    CallTag,
    InsightEvent,
    SummaryProperties,
)
from callstream.store.insights import Position, SummaryFilter, Window
from callstream.store.interfaces import PartitionCommit
from callstream.store.sqlite.database import Database
from callstream.store.sqlite.engine import SqliteEngineStore
from callstream.store.sqlite.insights import (
    SqliteInsightsStore,
    event_identity_prefix,
    metric_identity_prefix,
)
from callstream.store.sqlite.schema import migrate
from callstream.store.sqlite.signal import HighWater

ACCOUNT = "AC" + "1" * 32
OTHER = "AC" + "2" * 32
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def call(n: int) -> str:
    return f"CA{n:032x}"


def summary(n: int, version: int, **changes: Any) -> CallSummary:
    base = CallSummary(
        account_sid=ACCOUNT,
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


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[SqliteEngineStore, SqliteInsightsStore]]:
    db = Database(tmp_path / "insights.db")
    db.write_sync(migrate)
    yield SqliteEngineStore(db, HighWater()), SqliteInsightsStore(db)
    db.close()


async def commit(engine: SqliteEngineStore, *events: InsightEvent) -> None:
    await engine.commit(PartitionCommit(partition=0, events=[output_event(e) for e in events]))


def test_the_latest_processing_version_wins_whatever_the_commit_order(
    stores: tuple[SqliteEngineStore, SqliteInsightsStore],
) -> None:
    engine, store = stores
    tags: tuple[CallTag, ...] = ("high_jitter", "silence")

    async def scenario() -> None:
        await commit(engine, summary(1, 2, tags=tags))
        await commit(engine, summary(1, 1))  # older, late: ignored
        await commit(engine, summary(1, 2, tags=tags))  # a replay: ignored
        latest = await store.latest_summary(ACCOUNT, call(1))
        assert latest is not None
        decoded = msgspec.msgpack.decode(latest.body, type=CallSummary)
        assert decoded.processing_version == 2 and decoded.tags == tags
        assert await tagged("silence") == [call(1)]
        done = summary(1, 3, kind="complete", processing_state="complete", tags=("low_mos",))
        await commit(engine, done)
        assert await tagged("silence") == []
        assert await tagged("low_mos") == [call(1)]
        states = SummaryFilter(processing_states=frozenset({"complete"}))
        assert len((await store.summaries(ACCOUNT, states, "start_time", Window(10))).rows) == 1

    async def tagged(tag: str) -> list[str]:
        where = SummaryFilter(tags=frozenset({tag}))
        rows = await store.summaries(ACCOUNT, where, "start_time", Window(10))
        return [row.key[1] for row in rows.rows]

    asyncio.run(scenario())


def test_every_query_is_scoped_to_its_account(
    stores: tuple[SqliteEngineStore, SqliteInsightsStore],
) -> None:
    engine, store = stores

    async def scenario() -> None:
        await commit(engine, summary(1, 1))
        assert await store.has_call(ACCOUNT, call(1))
        assert not await store.has_call(OTHER, call(1))
        assert await store.latest_summary(OTHER, call(1)) is None
        rows = await store.summaries(OTHER, SummaryFilter(), "start_time", Window(10))
        assert rows.rows == [] and not rows.more

    asyncio.run(scenario())


def test_keyset_pages_cover_every_row_once_in_both_directions(
    stores: tuple[SqliteEngineStore, SqliteInsightsStore],
) -> None:
    engine, store = stores
    # Ties on the sort key: call SIDs break them, so no row is skipped or repeated.
    calls = [summary(n, 1, start_time=T0 + timedelta(seconds=n // 3)) for n in range(1, 11)]

    async def scenario() -> None:
        await commit(engine, *calls)
        pages: list[list[tuple[float, str]]] = []
        window: Window[Any] = Window(3)
        while True:
            rows = await store.summaries(ACCOUNT, SummaryFilter(), "start_time", window)
            pages.append([row.key for row in rows.rows])
            if not rows.more:
                break
            window = Window(3, Position("after", rows.rows[-1].key))
        listed = [key[1] for page in pages for key in page]
        newest_first = sorted(calls, key=lambda s: (s.start_time, s.call_sid), reverse=True)
        assert listed == [s.call_sid for s in newest_first]
        assert [len(page) for page in pages] == [3, 3, 3, 1]
        # Reading back from each page's first row gives the page before it, in list order.
        for previous, page in pairwise(pages):
            back = Window(3, Position("before", page[0]))
            rows = await store.summaries(ACCOUNT, SummaryFilter(), "start_time", back)
            assert [row.key for row in rows.rows] == previous
            assert rows.more == (previous is not pages[0])

    asyncio.run(scenario())


def test_identity_prefixes_match_the_model_s_identities() -> None:
    for edge in EDGES:
        event = CallEvent(
            account_sid=ACCOUNT, call_sid=call(1), time=T0, seq=7, edge=edge, group="g", name="n"
        )
        assert event.identity.startswith(event_identity_prefix(edge))
        for direction in ("inbound", "outbound", "both", "unknown"):
            metric = CallMetric(
                account_sid=ACCOUNT,
                call_sid=call(1),
                time=T0,
                window_start=T0,
                edge=edge,
                direction=direction,  # type: ignore[arg-type]
            )
            assert metric.identity.startswith(metric_identity_prefix(edge, direction))
            assert metric.identity.startswith(metric_identity_prefix(edge, None))
            other = "both" if direction != "both" else "inbound"
            assert not metric.identity.startswith(metric_identity_prefix(edge, other))


def test_events_and_metrics_filter_by_edge_and_direction(
    stores: tuple[SqliteEngineStore, SqliteInsightsStore],
) -> None:
    engine, store = stores
    events = [
        CallEvent(
            account_sid=ACCOUNT,
            call_sid=call(1),
            time=T0 + timedelta(seconds=10 - seq),  # committed newest first
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

    async def scenario() -> None:
        await commit(engine, *events, *metrics)
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

    asyncio.run(scenario())


def test_time_filters_take_twilio_s_relative_and_iso_forms() -> None:
    now = 1_700_000_000.0
    assert parse_moment("30m", now) == now - 1800
    assert parse_moment("4h", now) == now - 4 * 3600
    assert parse_moment("3d", now) == now - 3 * 86400
    assert parse_moment("1w", now) == now - 7 * 86400
    assert parse_moment("0m", now) == now
    assert (
        parse_moment("2021-08-25T03:40:25Z", now)
        == datetime(2021, 8, 25, 3, 40, 25, tzinfo=UTC).timestamp()
    )
    assert parse_moment("2021-08-25T05:40:25+02:00", now) == parse_moment(
        "2021-08-25T03:40:25", now
    )
    assert parse_moment("2021-08-25", now) == datetime(2021, 8, 25, tzinfo=UTC).timestamp()
    for bad in ("yesterday", "4 h", "-1h", "1y", ""):
        with pytest.raises(ValueError):
            parse_moment(bad, now)
