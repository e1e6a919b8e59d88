"""Whole calls through CallInsights: the call events, metric records and summaries they give."""

from __future__ import annotations

from datetime import timedelta

import pytest

from callstream.model.insights import CallEvent, CallMetric, CallSummary
from callstream.model.mos import calculate_mos, round_mos
from callstream.model.telemetry import GatewayEvent, GatewayMetric, SdkEvent
from tests.unit.test_insights_builders import (
    ACCOUNT,
    CallBuilder,
    Driver,
    at,
    call_events,
    client_call,
    metrics,
    pstn_call,
    summaries,
    trunking_call,
)


def _complete(driver: Driver) -> CallSummary:
    driver.advance(100_000)
    final = [s for s in summaries(driver.events) if s.kind == "complete"]
    assert len(final) == 1
    return final[0]


def test_pstn_call_events_metrics_and_summary() -> None:
    b = CallBuilder()
    records = pstn_call(b, talk=30)
    driver = Driver()
    produced = driver.apply(records, now=40)

    events = call_events(produced)
    gateway_records = [r for r in records if isinstance(r, GatewayEvent)]
    assert [(e.edge, e.name, e.time) for e in events] == [
        (r.edge, r.name, r.timestamp) for r in gateway_records
    ]
    assert all(e.event_type == "com.twilio.voice.insights.call-event.gateway" for e in events)
    assert [e.seq for e in events] == list(range(len(events)))
    assert all(e.account_sid == ACCOUNT and e.gateway is not None for e in events)

    records_metric = [r for r in records if isinstance(r, GatewayMetric)]
    produced_metrics = metrics(produced)
    assert len(produced_metrics) == len(records_metric) == 6
    first_inbound = produced_metrics[0]
    assert first_inbound.event_type == "com.twilio.voice.insights.call-metrics.gateway"
    assert (first_inbound.edge, first_inbound.direction) == ("carrier_edge", "inbound")
    assert first_inbound.time - first_inbound.window_start == timedelta(seconds=10)
    assert first_inbound.interval is not None and first_inbound.interval.packets_received == 500
    # Cumulative is the running total of the stream so far.
    inbound = [m for m in produced_metrics if m.direction == "inbound"]
    assert [m.cumulative.packets_received for m in inbound if m.cumulative] == [500, 1000, 1500]
    outbound = [m for m in produced_metrics if m.direction == "outbound"]
    assert [m.cumulative.packets_sent for m in outbound if m.cumulative] == [500, 1000, 1500]

    summary = _complete(driver)
    assert summary.call_type == "carrier"
    assert summary.call_state == "completed"
    assert summary.start_time == at(0) and summary.end_time == at(35)
    assert summary.duration == 35 and summary.connect_duration == 30
    assert summary.from_ is not None and summary.from_.caller == "+14155550100"
    assert summary.to is not None and summary.to.callee == "+14155550199"
    assert summary.properties is not None
    assert summary.properties.direction == "inbound"
    assert summary.properties.last_sip_response_num == 200
    assert summary.properties.q850_cause == 16
    assert summary.properties.pdd_ms == 2000
    assert summary.properties.disconnected_by == "caller"
    edge = summary.carrier_edge
    assert edge is not None and edge.inbound is not None and edge.outbound is not None
    assert edge.inbound.packets_received == 1500 and edge.outbound.packets_sent == 1500
    assert edge.inbound.codec_name == "pcmu" and edge.inbound.packets_loss_percentage == 0.0
    assert edge.inbound.jitter is not None
    assert (edge.inbound.jitter.avg, edge.inbound.jitter.max) == (1.0, 3.0)
    assert summary.sip_edge is None and summary.sdk_edge is None and summary.client_edge is None
    assert summary.tags == ()


def test_gateway_cumulative_prefers_what_the_gateway_reported() -> None:
    from callstream.model.telemetry import GatewayCumulative

    b = CallBuilder()
    metric = b.gateway_metric(
        10,
        "inbound",
        packets=100,
        cumulative=GatewayCumulative(packets_received=900, packets_lost=3),
    )
    produced = metrics(Driver().apply([metric], now=11))
    assert produced[0].cumulative is not None
    assert produced[0].cumulative.packets_received == 900
    assert produced[0].cumulative.packets_lost == 3


def test_gateway_cumulative_jitter_is_the_running_average_and_maximum() -> None:
    b = CallBuilder()
    produced = metrics(
        Driver().apply(
            [b.gateway_metric(10, jitter=(1.0, 4.0)), b.gateway_metric(20, jitter=(3.0, 9.5))],
            now=21,
        )
    )
    cumulative = [m.cumulative.jitter for m in produced if m.cumulative]
    assert [(j.avg, j.max) for j in cumulative if j] == [(1.0, 4.0), (2.0, 9.5)]


def test_sip_trunking_call_has_both_edges() -> None:
    b = CallBuilder()
    driver = Driver()
    produced = driver.apply(trunking_call(b), now=40)
    assert {e.edge for e in call_events(produced)} == {"sip_edge", "carrier_edge"}
    assert {(m.edge, m.direction) for m in metrics(produced)} == {
        ("sip_edge", "inbound"),
        ("sip_edge", "outbound"),
        ("carrier_edge", "inbound"),
        ("carrier_edge", "outbound"),
    }
    summary = _complete(driver)
    assert summary.call_type == "trunking"
    assert summary.sip_edge is not None and summary.carrier_edge is not None
    assert summary.carrier_edge.properties is not None
    assert summary.carrier_edge.properties.direction == "outbound"
    assert summary.properties is not None
    assert summary.properties.direction == "trunking_terminating"
    assert summary.to is not None and summary.to.country_code == "GB"


def test_client_call_sdk_events_metrics_and_summary() -> None:
    b = CallBuilder()
    records = client_call(b, talk=30)
    driver = Driver()
    produced = driver.apply(records, now=40)

    sdk = [e for e in call_events(produced) if e.edge == "sdk_edge"]
    sdk_records = [r for r in records if isinstance(r, SdkEvent)]
    assert [(e.group, e.name, e.level) for e in sdk] == [
        (r.group, r.name, r.level) for r in sdk_records
    ]
    assert all(e.event_type == "com.twilio.voice.insights.call-event.sdk" for e in sdk)
    pair = next(e for e in sdk if e.name == "selected-ice-candidate-pair")
    assert pair.sdk is not None and pair.sdk.ice_candidate_pair is not None
    assert pair.sdk.ice_candidate_pair.remote is not None
    assert pair.sdk.ice_candidate_pair.remote.type == "srflx"
    feedback = next(e for e in sdk if e.group == "feedback")
    assert feedback.sdk is not None and feedback.sdk.feedback is not None
    assert (feedback.sdk.feedback.score, feedback.sdk.feedback.reason) == (3, "choppy-audio")
    assert feedback.sdk.metadata is not None and feedback.sdk.metadata.sdk is not None
    assert feedback.sdk.metadata.sdk.version == "2.18.0"

    sdk_metrics = [m for m in metrics(produced) if m.edge == "sdk_edge"]
    assert len(sdk_metrics) == 3  # 30 samples, three full windows, no flush needed
    assert all(m.direction == "both" for m in sdk_metrics)
    assert all(m.event_type == "com.twilio.voice.insights.call-metrics.sdk" for m in sdk_metrics)

    summary = _complete(driver)
    assert summary.call_type == "client"
    assert summary.client_edge is not None
    edge = summary.sdk_edge
    assert edge is not None and edge.events is not None and edge.properties is not None
    assert edge.properties.direction == "inbound" and edge.properties.disconnected_by == "remote"
    assert edge.events.levels == {"DEBUG": 2, "INFO": 4}
    assert edge.events.groups == {
        "connection": 3,
        "feedback": 1,
        "ice_candidate": 1,
        "ice_connection_state": 1,
    }
    assert edge.events.feedback is not None and edge.events.feedback.score == 3
    assert edge.inbound is not None and edge.inbound.packets_received == 1500
    assert edge.inbound.rtt is not None and edge.inbound.rtt.avg == 80.0
    assert edge.outbound is not None and edge.outbound.codec_name == "opus"
    assert edge.outbound.codec == 111
    # The SDK answered an incoming call, so it is the called party.
    assert summary.to is not None and summary.to.callee == "client:alice"
    assert summary.to.sdk is not None and summary.to.sdk.version == "2.18.0"
    assert summary.connect_duration == 31
    assert summary.tags == ()


def test_ten_samples_make_one_sdk_record_with_the_sdk_mos() -> None:
    b = CallBuilder()
    driver = Driver()
    samples = b.samples(0, 10, rtt=81, jitter=9, loss=0)
    (record,) = metrics(driver.apply(samples, now=10))
    assert record.window_start == at(0) and record.time == at(10)
    interval = record.interval
    assert interval is not None and interval.mos is not None and interval.jitter is not None
    # twilio-voice.js gives calculate(81, 9, 0) = 4.3858 -> 4.39 (reference §7 and §3.2);
    # the first sample of a call has no MOS, so nine samples make the average.
    expected = round_mos(calculate_mos(81, 9, 0))
    assert expected == 4.39
    assert (interval.mos.avg, interval.mos.value, interval.mos.min) == (4.39, 4.39, 4.39)
    assert interval.jitter.value == 9.0
    assert interval.packets_received == 500 and interval.bytes_received == 80_000
    assert record.cumulative is not None and record.cumulative.packets_sent == 500
    assert record.cumulative.bytes_sent == 80_000
    assert record.codec_name == "opus" and record.codec == 111


def test_windows_are_aligned_to_the_first_sample_and_flushed_late() -> None:
    b = CallBuilder()
    driver = Driver()
    assert metrics(driver.apply(b.samples(0, 14), now=14)) != []
    # Four samples wait in the second window until its flush time.
    assert driver.due("flush") == pytest.approx(20 + 15)
    assert metrics(driver.advance(34)) == []
    (late,) = metrics(driver.advance(35))
    assert late.window_start == at(10)
    assert late.interval is not None and late.interval.packets_received == 200


def test_a_sample_for_an_emitted_window_counts_for_the_summary_only() -> None:
    b = CallBuilder()
    driver = Driver()
    samples = b.samples(0, 11)
    first_window, straggler = samples[:10], samples[10:]
    driver.apply(first_window, now=10)
    # Sample at t=10 belongs to the next window; one for t=3.5, with a bad RTT, comes too late.
    late = b.sample(3.5, rtt=999)
    produced = driver.apply([*straggler, late], now=12)
    assert metrics(produced) == []
    assert driver.state.samples is not None and driver.state.samples.late_samples == 1
    driver.apply([b.gateway_event(20, "completed", edge="client_edge")], now=20)
    summary = _complete(driver)
    emitted = [m for m in metrics(driver.events) if m.edge == "sdk_edge"]
    assert sum(m.interval.packets_received for m in emitted if m.interval) == 550
    assert all(m.interval.rtt.max == 80 for m in emitted if m.interval and m.interval.rtt)
    # ... but the summary counts it.
    assert summary.sdk_edge is not None and summary.sdk_edge.inbound is not None
    assert summary.sdk_edge.inbound.rtt is not None and summary.sdk_edge.inbound.rtt.max == 999


def test_a_full_window_waits_for_an_earlier_one_still_filling() -> None:
    b = CallBuilder()
    driver = Driver()
    samples = b.samples(0, 20)
    # The first window misses one sample; the second is complete.
    produced = driver.apply(samples[:9] + samples[10:], now=20)
    assert metrics(produced) == []
    flushed = metrics(driver.advance(20 + 15))
    assert [m.window_start for m in flushed] == [at(0), at(10)]


def test_samples_out_of_order_make_the_same_record() -> None:
    b = CallBuilder()
    samples = b.samples(0, 10, rtt=120, jitter=12)
    forward = metrics(Driver().apply(samples, now=10))
    backward = metrics(Driver().apply(samples[::-1], now=10))
    # Windows align to the earliest sample of the first batch, whatever its order.
    assert len(forward) == 1
    assert [m.interval for m in forward] == [m.interval for m in backward]


def test_call_event_seq_counts_every_event_of_the_call_in_arrival_order() -> None:
    b = CallBuilder()
    driver = Driver()
    first = driver.apply(
        [b.gateway_event(0, "initiated"), b.sdk_event(1, "connection", "incoming")], now=1
    )
    second = driver.apply([b.gateway_event(2, "ringing")], now=2)
    seqs = [e.seq for e in call_events(first + second)]
    assert seqs == [0, 1, 2]
    identities = {e.identity for e in call_events(first + second) if isinstance(e, CallEvent)}
    assert len(identities) == 3


def test_metric_identities_are_distinct() -> None:
    b = CallBuilder()
    driver = Driver()
    driver.apply(client_call(b, talk=30), now=40)
    driver.advance(100_000)
    ids = [m.identity for m in metrics(driver.events) if isinstance(m, CallMetric)]
    assert len(ids) == len(set(ids))
