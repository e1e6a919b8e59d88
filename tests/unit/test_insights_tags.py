"""Summary tags (reference §4.3): each threshold crossed gives its tag, a clean call none."""

from __future__ import annotations

from typing import Any

import pytest

from callstream.insights.call import CallInsights
from callstream.insights.step import EngineConfig
from callstream.model.insights import CallSummary
from callstream.model.telemetry import TelemetryRecord
from tests.unit.test_insights_builders import (
    CallBuilder,
    Driver,
    client_call,
    pstn_call,
    summaries,
)


def _summary(records: list[TelemetryRecord]) -> CallSummary:
    driver = Driver(CallInsights(EngineConfig(partial_after=10, complete_after=600)))
    driver.apply(records, now=100)
    driver.advance(10_000)
    return summaries(driver.events)[-1]


def _pstn(**metric: Any) -> list[TelemetryRecord]:
    """A PSTN call whose inbound carrier metrics carry ``metric``."""
    b = CallBuilder()
    records = pstn_call(b, talk=30)
    out: list[TelemetryRecord] = []
    for record in records:
        if getattr(record, "direction", None) == "inbound" and hasattr(record, "codec"):
            t = record.timestamp.timestamp() - 1_700_000_000
            record = b.gateway_metric(t, "inbound", **metric)
        out.append(record)
    return out


def test_clean_calls_have_no_tags() -> None:
    assert _summary(pstn_call(CallBuilder())).tags == ()
    assert _summary(client_call(CallBuilder())).tags == ()


@pytest.mark.parametrize(
    ("metric", "tagged"),
    [
        ({"jitter": (5.0, 30.0)}, True),  # "average 5 ms and max 30 ms": reaching both
        ({"jitter": (4.9, 60.0)}, False),
        ({"jitter": (9.0, 29.9)}, False),
        ({"packet_delay_variation": {"d50": 20, "d99": 200}}, True),
        ({"packet_delay_variation": {"d50": 20, "d90": 250}}, False),
    ],
)
def test_gateway_high_jitter(metric: dict[str, Any], tagged: bool) -> None:
    assert ("high_jitter" in _summary(_pstn(**metric)).tags) is tagged


@pytest.mark.parametrize(("lost", "tagged"), [(27, True), (26, False)])
def test_gateway_high_packet_loss_above_five_percent(lost: int, tagged: bool) -> None:
    # 27 of 500 + 27 due is 5.12 %; 26 is 4.94 %.
    summary = _summary(_pstn(packets=500, lost=lost))
    assert ("high_packet_loss" in summary.tags) is tagged


def test_gateway_high_latency_above_150_ms() -> None:
    from callstream.model.telemetry import MillisStats

    slow = _summary(_pstn(latency=MillisStats(avg=151, max=300)))
    fine = _summary(_pstn(latency=MillisStats(avg=150, max=300)))
    assert "high_latency" in slow.tags and "high_latency" not in fine.tags


def test_silence_when_an_answered_call_receives_nothing() -> None:
    assert "silence" in _summary(_pstn(packets=0)).tags


def test_no_silence_for_a_call_that_was_never_answered() -> None:
    b = CallBuilder()
    records: list[TelemetryRecord] = [
        b.gateway_event(0, "initiated"),
        b.gateway_event(2, "ringing"),
        b.gateway_metric(10, "inbound", packets=0),
        b.gateway_event(20, "no-answer", call_state="noanswer"),
    ]
    summary = _summary(records)
    assert summary.call_state == "noanswer" and summary.tags == ()


@pytest.mark.parametrize(("pdd", "tagged"), [(6001, True), (6000, False)])
def test_high_pdd(pdd: int, tagged: bool) -> None:
    b = CallBuilder()
    records = pstn_call(b)
    records.append(b.gateway_event(2.5, "ringing", pdd_ms=pdd))
    assert ("high_pdd" in _summary(records).tags) is tagged


def test_pdd_from_ringing_when_not_reported() -> None:
    b = CallBuilder()
    records: list[TelemetryRecord] = [
        b.gateway_event(0, "initiated"),
        b.gateway_event(7.25, "ringing"),
        b.gateway_event(20, "no-answer"),
    ]
    summary = _summary(records)
    assert summary.properties is not None and summary.properties.pdd_ms == 7250
    assert summary.tags == ("high_pdd",)


def test_sdk_high_latency_low_mos_high_jitter_and_loss() -> None:
    b = CallBuilder()
    bad = client_call(b, talk=30, rtt=450, jitter=20, loss=6, mos=3.4)
    # Jitter also needs a 30 ms peak.
    bad.append(b.sample(40, rtt=450, jitter=60, loss=6, mos=3.4))
    tags = _summary(bad).tags
    assert {"high_latency", "low_mos", "high_jitter", "high_packet_loss"} <= set(tags)


def test_sdk_thresholds_are_strict() -> None:
    b = CallBuilder()
    edge = client_call(b, talk=30, rtt=400, mos=3.5, loss=0)
    assert _summary(edge).tags == ()


def test_ice_failure_when_ice_never_connected() -> None:
    b = CallBuilder()
    records: list[TelemetryRecord] = [
        b.gateway_event(0, "initiated", edge="client_edge"),
        b.sdk_event(0.5, "connection", "incoming", direction="INCOMING"),
        b.sdk_event(1, "ice-connection-state", "checking", "DEBUG"),
        b.sdk_event(9, "ice-connection-state", "failed", "ERROR"),
        b.sdk_event(9.1, "connection", "error", "ERROR", payload={"code": 31600}),
        b.gateway_event(9.5, "failed", edge="client_edge", call_state="fail"),
    ]
    summary = _summary(records)
    assert summary.tags == ("ice_failure",)
    assert summary.sdk_edge is not None and summary.sdk_edge.events is not None
    assert summary.sdk_edge.events.errors == {31600: 1}


def test_no_ice_failure_when_ice_recovered() -> None:
    b = CallBuilder()
    records = client_call(b)
    records.append(b.sdk_event(20, "ice-connection-state", "failed", "ERROR"))
    assert "ice_failure" not in _summary(records).tags


def test_tags_follow_twilios_table_order() -> None:
    b = CallBuilder()
    records = _pstn(packets=0, jitter=(8.0, 40.0))
    records.append(b.gateway_event(2.5, "ringing", pdd_ms=9000))
    assert _summary(records).tags == ("silence", "high_jitter", "high_pdd")
