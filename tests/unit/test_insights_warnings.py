"""SDK quality warnings the engine raises and clears from 1-second samples (reference §5).

Each test builds a sample sequence that crosses one threshold at known seconds; samples are
applied in one batch (in reverse order, so that timestamp order is the engine's doing) and
the windows are flushed, as the runtime would.
"""

from __future__ import annotations

from typing import Any

import pytest

from callstream.insights.quality import WARNING_RULES
from callstream.model.insights import CallEvent
from callstream.model.telemetry import SdkSample
from tests.unit.test_insights_builders import T0, CallBuilder, Driver, call_events

Warnings = list[tuple[str, str, float]]


def _run(samples: list[SdkSample], extra: list[Any] | None = None) -> list[CallEvent]:
    driver = Driver()
    driver.apply([*(extra or []), *samples[::-1]], now=len(samples))
    driver.advance(10_000)
    return [e for e in call_events(driver.events) if "warning" in e.group]


def _summary(events: list[CallEvent]) -> Warnings:
    """(group suffix, name, seconds after T0) of each warning event."""
    return [(e.group.rsplit("-", 1)[1], e.name, e.time.timestamp() - T0) for e in events]


def _series(values: dict[int, dict[str, Any]], length: int, **base: Any) -> list[SdkSample]:
    """Samples 0..length-1 with ``values`` at the given seconds; MOS is held at a good value
    (so that a high RTT does not also raise low-mos) unless a test asks for the SDK's."""
    b = CallBuilder()
    base.setdefault("mos", 4.3)
    return [b.sample(t, **{**base, **values.get(t, {})}) for t in range(length)]


def test_high_rtt_raised_on_the_third_crossing_and_cleared_when_the_window_is_clean() -> None:
    samples = _series({t: {"rtt": 500} for t in (5, 6, 7)}, 25)
    events = _run(samples)
    assert _summary(events) == [("raised", "high-rtt", 7), ("cleared", "high-rtt", 17)]
    raised, cleared = events
    assert raised.group == "network-quality-warning-raised" and raised.level == "WARNING"
    assert cleared.group == "network-quality-warning-cleared" and cleared.level == "INFO"
    assert raised.sdk is not None and raised.sdk.metric is not None
    assert raised.sdk.metric.threshold == 400
    # The window at t=7 holds the eight samples seen so far.
    assert raised.sdk.metric.values == (80.0,) * 5 + (500.0,) * 3


def test_nothing_is_decided_in_the_first_five_seconds() -> None:
    samples = _series({t: {"rtt": 500} for t in (0, 1, 2)}, 20)
    # Crossed three times by t=2, but the first decision is at t=5, with those still in view.
    assert _summary(_run(samples)) == [("raised", "high-rtt", 5), ("cleared", "high-rtt", 12)]


def test_two_crossings_raise_nothing() -> None:
    samples = _series({t: {"rtt": 500} for t in (6, 9)}, 25)
    assert _run(samples) == []


def test_a_null_in_the_window_defers_the_decision() -> None:
    values: dict[int, dict[str, Any]] = {t: {"rtt": 500} for t in (5, 6, 7)}
    values[4] = {"rtt": None}
    samples = _series(values, 25)
    # The null at t=4 stays in the 10-sample window until t=14; the clear then waits for
    # WARNING_TIMEOUT (t=17 would clear the window, t=19 is five seconds after the raise).
    assert _summary(_run(samples)) == [("raised", "high-rtt", 14), ("cleared", "high-rtt", 19)]


def test_low_mos_waits_for_the_first_samples_null_mos_to_leave_the_window() -> None:
    # rtt 600 + jitter 100 gives MOS 1.0; the call's first sample has no MOS.
    samples = _series({t: {"rtt": 600, "jitter": 100} for t in (5, 6, 7)}, 25, mos="auto")
    names = {name for _, name, _ in _summary(_run(samples))}
    assert "low-mos" in names
    low_mos = [w for w in _summary(_run(samples)) if w[1] == "low-mos"]
    assert low_mos == [("raised", "low-mos", 10), ("cleared", "low-mos", 17)]


def test_high_jitter() -> None:
    samples = _series({t: {"jitter": 31} for t in (8, 9, 10)}, 30)
    jitter = [w for w in _summary(_run(samples)) if w[1] == "high-jitter"]
    assert jitter == [("raised", "high-jitter", 10), ("cleared", "high-jitter", 20)]


def test_jitter_at_the_threshold_is_not_high() -> None:
    samples = _series({t: {"jitter": 30} for t in range(5, 15)}, 20)
    assert [w for w in _summary(_run(samples)) if w[1] == "high-jitter"] == []


def test_high_packet_loss_and_high_packets_lost_fraction() -> None:
    samples = _series({t: {"loss": 10} for t in (5, 6, 7)}, 25)
    warnings = _summary(_run(samples))
    assert [w for w in warnings if w[1] == "high-packet-loss"] == [
        ("raised", "high-packet-loss", 7),
        ("cleared", "high-packet-loss", 17),
    ]
    # Average of the last 7: 30/7 > 3 at t=7; the tens leave the 7-window by t=14 (avg 0 <= 1).
    assert [w for w in warnings if w[1] == "high-packets-lost-fraction"] == [
        ("raised", "high-packets-lost-fraction", 7),
        ("cleared", "high-packets-lost-fraction", 14),
    ]


def test_packets_lost_fraction_clears_only_at_or_below_one_percent() -> None:
    # 4 % on average raises; then 1.5 % keeps it raised (not above 3, not at or below 1).
    values = {t: {"loss": 4} for t in range(0, 10)} | {t: {"loss": 1.5} for t in range(10, 30)}
    warnings = [
        w for w in _summary(_run(_series(values, 30))) if w[1] == "high-packets-lost-fraction"
    ]
    assert warnings == [("raised", "high-packets-lost-fraction", 6)]


def test_low_bytes_received_is_cleared_no_sooner_than_five_seconds_after_raise() -> None:
    samples = _series({t: {"bytes_received": 0} for t in (5, 6, 7)}, 20)
    warnings = [w for w in _summary(_run(samples)) if w[1] == "low-bytes-received"]
    # Bytes flow again at t=8, but WARNING_TIMEOUT holds the warning until t=12.
    assert warnings == [("raised", "low-bytes-received", 7), ("cleared", "low-bytes-received", 12)]


def test_low_bytes_sent() -> None:
    samples = _series({t: {"bytes_sent": 0} for t in range(6, 9)}, 20)
    warnings = [w for w in _summary(_run(samples)) if w[1] == "low-bytes-sent"]
    assert warnings == [("raised", "low-bytes-sent", 8), ("cleared", "low-bytes-sent", 13)]


def test_constant_audio_levels() -> None:
    # A flat input level for the first 12 seconds, speech afterwards.
    values = {t: {"audio_in": 1000.0} for t in range(12)}
    events = _run(_series(values, 25))
    audio = [e for e in events if e.name == "constant-audio-input-level"]
    assert _summary(audio) == [
        ("raised", "constant-audio-input-level", 9),
        ("cleared", "constant-audio-input-level", 14),
    ]
    raised = audio[0]
    assert raised.group == "audio-level-warning-raised" and raised.level == "WARNING"
    assert raised.sdk is not None and raised.sdk.metric is not None
    assert raised.sdk.metric.threshold == 327.67 and raised.sdk.metric.values == (0.0,)


def test_constant_audio_output_level_is_raised_at_info() -> None:
    values = {t: {"audio_out": 500.0 + (t % 2) * 100} for t in range(30)}
    audio = [e for e in _run(_series(values, 30)) if e.name == "constant-audio-output-level"]
    assert [(e.group, e.level) for e in audio] == [("audio-level-warning-raised", "INFO")]
    assert audio[0].sdk is not None and audio[0].sdk.metric is not None
    assert audio[0].sdk.metric.values == (50.0,)


def test_a_clean_call_raises_nothing() -> None:
    assert _run(_series({}, 60)) == []


def test_a_warning_is_raised_once_until_cleared() -> None:
    samples = _series({t: {"rtt": 800} for t in range(5, 40)}, 40)
    assert _summary(_run(samples)) == [("raised", "high-rtt", 7)]


def test_the_sdks_own_warning_names_are_left_to_the_sdk() -> None:
    b = CallBuilder()
    bad = (5, 6, 7)
    samples = [
        b.sample(t, rtt=500 if t in bad else 80, jitter=40 if t in bad else 5, mos=4.3)
        for t in range(25)
    ]
    own = b.sdk_event(
        4,
        "network-quality-warning-raised",
        "high-rtt",
        "WARNING",
        payload={"data": {"threshold": 400, "values": [500, 500, 500]}},
    )
    names = {e.name for e in _run(samples, extra=[own]) if e.seq != 0}
    # high-rtt is the SDK's now (its own event is the only one); high-jitter is still ours.
    assert names == {"high-jitter"}


def test_a_warning_the_engine_raised_is_forgotten_when_the_sdk_takes_the_name_over() -> None:
    b = CallBuilder()
    driver = Driver()
    high = [b.sample(t, rtt=500 if t in (5, 6, 7) else 80, mos=4.3) for t in range(10)]
    driver.apply(high, now=10)
    assert [e.name for e in call_events(driver.events)] == ["high-rtt"]
    driver.apply([b.sdk_event(10, "network-quality-warning-raised", "high-rtt", "WARNING")], now=11)
    driver.apply([b.sample(t, mos=4.3) for t in range(10, 30)], now=30)
    driver.advance(1000)
    warnings = [e for e in call_events(driver.events) if e.name == "high-rtt"]
    # Our raise, the SDK's raise; no clear from us.
    assert [e.group for e in warnings] == ["network-quality-warning-raised"] * 2


def test_every_rule_has_a_known_group_and_level() -> None:
    for rule in WARNING_RULES:
        assert rule.group in ("network-quality-warning", "audio-level-warning")
        assert rule.raised_level in ("WARNING", "INFO")


@pytest.mark.parametrize("batch", [1, 3, 10, 25])
def test_warnings_do_not_depend_on_how_samples_are_batched(batch: int) -> None:
    samples = _series({t: {"rtt": 500, "loss": 8} for t in (5, 6, 7, 20, 21, 22)}, 40)
    driver = Driver()
    for start in range(0, len(samples), batch):
        chunk = samples[start : start + batch]
        driver.apply(chunk, now=start + len(chunk))
    driver.advance(10_000)
    got = _summary([e for e in call_events(driver.events) if "warning" in e.group])
    assert got == _summary(_run(samples))
