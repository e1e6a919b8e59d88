"""Order independence: one call's records, in any arrival order and any batching, give the
same complete summary (apart from its processing version and emission time)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from callstream.insights.call import CallInsights
from callstream.insights.step import EngineConfig
from callstream.model.insights import CallSummary
from callstream.model.telemetry import MillisStats, Party, TelemetryRecord
from tests.unit.test_insights_builders import CallBuilder, Driver, client_call, summaries

CONFIG = EngineConfig(partial_after=10, complete_after=600)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _rich_call() -> list[TelemetryRecord]:
    """A client call with something of everything: poor seconds, SDK warnings and errors,
    feedback, delay percentiles, facts reported twice with different values, and events that
    share a timestamp."""
    b = CallBuilder()
    records = client_call(b, talk=23, jitter=7.25, rtt=130.5)
    records += [
        b.sample(27, rtt=480.25, jitter=41.5, loss=7.5),
        b.sample(28, rtt=None, jitter=33.3, loss=2.25, mos=None),
        b.gateway_metric(
            30,
            "inbound",
            edge="client_edge",
            packets=480,
            lost=21,
            jitter=(6.125, 37.5),
            latency=MillisStats(avg=33.3, max=90.1),
            packet_delay_variation={"d50": 4, "d99": 120},
        ),
        b.sdk_event(
            25,
            "network-quality-warning-raised",
            "high-jitter",
            "WARNING",
            payload={"data": {"threshold": 30, "values": [41.5, 33.3, 31]}},
        ),
        b.sdk_event(26, "connection", "error", "WARNING", payload={"code": 31005, "message": "x"}),
        b.sdk_event(
            26, "settings", "edge", payload={"edge": "ashburn", "selected_edge": ["ashburn"]}
        ),
        b.gateway_event(5, "answered", edge="client_edge", to=Party(callee="client:bob")),
        b.gateway_event(5, "answered", edge="client_edge", to=Party(callee="client:alice")),
        b.gateway_event(34, "completed", edge="client_edge", sip_response_code=200, q850_cause=16),
    ]
    return records


RECORDS = _rich_call()


def _complete(driver: Driver) -> CallSummary:
    driver.advance(1_000_000)
    final = [s for s in summaries(driver.events) if s.kind == "complete"]
    assert len(final) == 1
    # What may differ between runs: when it was emitted and how many summaries came before.
    return msgspec.structs.replace(final[0], time=_EPOCH, processing_version=0)


def _run(order: list[int], cuts: list[int]) -> CallSummary:
    records = [RECORDS[i] for i in order]
    bounds = [0, *sorted(set(cuts)), len(records)]
    driver = Driver(CallInsights(CONFIG))
    for n, (start, end) in enumerate(itertools.pairwise(bounds)):
        if start < end:
            driver.apply(records[start:end], now=40 + n)
            driver.advance(40 + n)
    return _complete(driver)


REFERENCE = _run(list(range(len(RECORDS))), [])


def test_the_reference_summary_has_what_the_property_compares() -> None:
    assert REFERENCE.sdk_edge is not None and REFERENCE.sdk_edge.events is not None
    assert REFERENCE.sdk_edge.events.errors == {31005: 1}
    assert REFERENCE.to is not None and REFERENCE.to.callee is not None
    assert REFERENCE.client_edge is not None and REFERENCE.client_edge.inbound is not None
    assert "high_jitter" in REFERENCE.tags


def test_the_same_timestamp_picks_the_same_fact_in_any_order() -> None:
    forward = _run(list(range(len(RECORDS))), [])
    backward = _run(list(reversed(range(len(RECORDS)))), [])
    assert forward.to == backward.to


@settings(max_examples=60, deadline=None)
@given(
    order=st.permutations(list(range(len(RECORDS)))),
    cuts=st.lists(st.integers(min_value=1, max_value=len(RECORDS) - 1), max_size=12),
)
def test_any_order_and_batching_gives_the_same_complete_summary(
    order: list[int], cuts: list[int]
) -> None:
    assert _run(order, cuts) == REFERENCE
