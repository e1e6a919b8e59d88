"""The summary lifecycle: partial, re-partials, predicted-complete, complete, late data, idle."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from callstream.insights.call import CallInsights
from callstream.insights.predictor_api import PredictorFeatures
from callstream.insights.step import EngineConfig
from callstream.model.insights import CallSummary
from tests.unit.test_insights_builders import (
    ACCOUNT,
    T0,
    CallBuilder,
    Driver,
    at,
    call_events,
    call_sid,
    client_call,
    metrics,
    pstn_call,
    summaries,
)

CONFIG = EngineConfig(partial_after=10, complete_after=600)


@dataclass
class Never:
    """A predictor that never believes the summary is complete, and records what it saw."""

    seen: list[PredictorFeatures]

    def predict(self, features: PredictorFeatures) -> bool:
        self.seen.append(features)
        return False


@dataclass
class After:
    """Says complete from the n-th question on."""

    n: int
    asked: int = 0

    def predict(self, features: PredictorFeatures) -> bool:
        self.asked += 1
        return self.asked >= self.n


def _kinds(items: list[CallSummary]) -> list[tuple[str, int, float]]:
    return [(s.kind, s.processing_version, s.time.timestamp() - T0) for s in items]


def test_partial_at_end_plus_partial_after_then_complete_at_end_plus_complete_after() -> None:
    driver = Driver(CallInsights(CONFIG, Never([])))
    driver.apply(pstn_call(CallBuilder()), now=40)  # the end becomes known at 40
    assert driver.due("partial") == 50 and driver.due("complete") == 640
    assert summaries(driver.advance(49.9)) == []
    (partial,) = summaries(driver.advance(50))
    assert (partial.kind, partial.processing_state, partial.processing_version) == (
        "partial",
        "partial",
        1,
    )
    assert partial.time == at(50)
    (complete,) = summaries(driver.advance(640))
    assert (complete.kind, complete.processing_state, complete.processing_version) == (
        "complete",
        "complete",
        2,
    )
    assert complete.time == at(640)
    assert driver.timers == {}


def test_late_data_that_changes_the_summary_gives_another_partial() -> None:
    b = CallBuilder()
    driver = Driver(CallInsights(CONFIG, Never([])))
    driver.apply(pstn_call(b), now=40)
    driver.advance(50)
    # A late metric record arrives: its packets change the summary.
    driver.apply([b.gateway_metric(36, "inbound", packets=77)], now=60)
    assert driver.due("repartial") == 70
    (again,) = summaries(driver.advance(70))
    assert (again.kind, again.processing_version) == ("partial", 2)
    assert again.carrier_edge is not None and again.carrier_edge.inbound is not None
    assert again.carrier_edge.inbound.packets_received == 1577


def test_late_data_that_changes_nothing_gives_no_partial() -> None:
    b = CallBuilder()
    driver = Driver(CallInsights(CONFIG, Never([])))
    driver.apply(pstn_call(b), now=40)
    driver.advance(50)
    # The same progress again (a sensor resending): no summary field changes.
    driver.apply([b.gateway_event(35, "completed", call_state="completed")], now=60)
    assert summaries(driver.advance(100)) == []
    # ... but the event itself is still a call event.
    assert [e.name for e in call_events(driver.events)][-1] == "completed"


def test_repartials_are_debounced() -> None:
    b = CallBuilder()
    driver = Driver(CallInsights(CONFIG, Never([])))
    driver.apply(pstn_call(b), now=40)
    driver.advance(50)
    for i in range(5):
        driver.apply([b.gateway_metric(36 + i, "inbound", packets=10)], now=60 + i)
    assert [s.kind for s in summaries(driver.advance(80))] == ["partial"]


def test_predicted_complete_is_emitted_once_and_says_partial() -> None:
    predictor = After(n=2)
    driver = Driver(CallInsights(CONFIG, predictor))
    driver.apply(pstn_call(CallBuilder()), now=40)
    driver.advance(600)
    kinds = _kinds(summaries(driver.events))
    # Asked every complete_after/60 = 10 s after the first partial; yes on the second ask.
    assert kinds == [("partial", 1, 50), ("predicted-complete", 2, 70)]
    predicted = summaries(driver.events)[1]
    assert predicted.processing_state == "partial"
    assert predictor.asked == 2
    driver.advance(10_000)
    assert [k for k, _, _ in _kinds(summaries(driver.events))] == [
        "partial",
        "predicted-complete",
        "complete",
    ]
    assert summaries(driver.events)[-1].processing_version == 3


def test_the_predictor_sees_durations_relative_to_complete_after() -> None:
    seen: list[PredictorFeatures] = []
    driver = Driver(CallInsights(EngineConfig(partial_after=1, complete_after=60), Never(seen)))
    driver.apply(pstn_call(CallBuilder()), now=40)
    driver.advance(45)
    assert seen, "the predictor was asked"
    first = seen[0]
    # Asked at 42 (partial at 41 + every 1 s): 2 s after the end and the last arrival.
    assert first.since_end == pytest.approx(2 / 60)
    assert first.since_last_arrival == pytest.approx(2 / 60)
    assert first.call_type == "carrier" and first.gateway_edges == 1
    assert first.gateway_edges_ended == 1 and not first.sdk_present


def test_default_predictor_says_complete_once_the_call_is_quiet() -> None:
    driver = Driver(CallInsights(CONFIG))
    driver.apply(pstn_call(CallBuilder()), now=40)
    driver.advance(639)
    kinds = [k for k, _, _ in _kinds(summaries(driver.events))]
    assert kinds == ["partial", "predicted-complete"]
    # Quiet for 5 % of complete_after (30 s) since the last arrival at 40.
    assert summaries(driver.events)[1].time == at(70)


def test_after_complete_late_data_gives_events_and_metrics_but_no_summary() -> None:
    b = CallBuilder()
    driver = Driver(CallInsights(CONFIG, Never([])))
    driver.apply(pstn_call(b), now=40)
    driver.advance(700)
    late = driver.apply(
        [b.gateway_event(36, "completed"), b.gateway_metric(36, "outbound")], now=800
    )
    assert len(call_events(late)) == 1 and len(metrics(late)) == 1
    assert driver.timers == {}
    driver.advance(100_000)
    assert [s.kind for s in summaries(driver.events)] == ["partial", "complete"]
    assert driver.state.late_records == 2


def test_late_samples_after_complete_still_make_sdk_records() -> None:
    b = CallBuilder()
    driver = Driver(CallInsights(CONFIG, Never([])))
    records = client_call(b, talk=10)
    driver.apply(records, now=15)
    driver.advance(700)
    # Ten samples that fill one window of the call's grid (it starts at t=4).
    produced = driver.apply(b.samples(34, 10), now=800)
    assert [m.edge for m in metrics(produced)] == ["sdk_edge"]


def test_a_call_whose_end_never_comes_is_ended_by_the_idle_timer() -> None:
    b = CallBuilder()
    driver = Driver(CallInsights(CONFIG, Never([])))
    records = pstn_call(b)[:-1]  # no "completed"
    driver.apply(records[:3], now=5)
    assert driver.due("idle") == 5 + 600
    driver.apply(records[3:], now=40)
    # The idle timer fires at 605, sees the arrival at 40 and waits until 640.
    driver.advance(605)
    assert driver.due("idle") == 640
    assert summaries(driver.events) == []
    produced = summaries(driver.advance(640))
    assert _kinds(produced) == [("partial", 1, 640), ("complete", 2, 640)]
    complete = produced[-1]
    # What was reported, nothing invented: answered, no end time.
    assert complete.call_state == "answered"
    assert complete.end_time is None and complete.duration is None
    assert complete.carrier_edge is not None
    assert driver.state.idle_ended


def test_idle_waits_at_least_a_minute_with_short_timers() -> None:
    driver = Driver(CallInsights(EngineConfig(partial_after=1, complete_after=5), Never([])))
    driver.apply([CallBuilder().gateway_event(0, "initiated")], now=0)
    assert driver.due("idle") == 60


def test_sdk_disconnect_ends_a_call_without_gateway_telemetry() -> None:
    b = CallBuilder()
    driver = Driver(CallInsights(CONFIG, Never([])))
    driver.apply(
        [
            b.sdk_event(0, "connection", "outgoing", direction="OUTGOING"),
            b.sdk_event(2, "connection", "accepted-by-remote", direction="OUTGOING"),
            *b.samples(3, 10),
            b.sdk_event(13, "connection", "disconnected-by-local", direction="OUTGOING"),
        ],
        now=14,
    )
    assert driver.due("partial") == 24
    summary = summaries(driver.advance(1000))[-1]
    assert summary.call_type == "client" and summary.call_state == "completed"
    assert summary.start_time == at(0) and summary.end_time == at(13)
    assert summary.connect_duration == 11
    assert summary.from_ is not None and summary.from_.sdk is not None


def test_state_round_trips_mid_call_without_changing_results() -> None:
    records = client_call(CallBuilder(), talk=45)
    batches = [records[i : i + 7] for i in range(0, len(records), 7)]
    outputs = []
    for roundtrip in (False, True):
        driver = Driver(CallInsights(CONFIG, Never([])), roundtrip=roundtrip)
        for n, batch in enumerate(batches):
            driver.apply(batch, now=5 + n)
            driver.advance(5 + n)
        driver.advance(100_000)
        outputs.append(driver.events)
    assert outputs[0] == outputs[1]
    # Every event record, every gateway metric, five SDK windows, partial and complete.
    assert len(call_events(outputs[0])) == 10
    assert len(metrics(outputs[0])) == 8 + 5
    assert [s.kind for s in summaries(outputs[0])] == ["partial", "complete"]


def test_encoded_state_is_small() -> None:
    logic = CallInsights(CONFIG)
    state = logic.new_state(ACCOUNT, call_sid())
    logic.apply(state, client_call(CallBuilder(), talk=120), T0 + 130)
    # A long SDK call keeps only its facts, aggregates and the last ten samples.
    assert len(logic.encode_state(state)) < 3000


def test_unknown_and_stale_timers_do_nothing() -> None:
    logic = CallInsights(CONFIG)
    state = logic.new_state(ACCOUNT, call_sid())
    for kind in ("complete", "partial", "repartial", "predict", "idle", "flush", "bogus"):
        step = logic.fire(state, kind, T0)
        assert step.events == [] and step.timers == {}
