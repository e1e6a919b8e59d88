"""The per-call logic's shortcuts give exactly what the long way gives.

Each shortcut taken for speed (integer rounding of millionths, the warning rules' bounds, the
state's encoded parts) is checked here against the computation it stands for.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callstream.insights import quality
from callstream.insights.aggregates import SCALE, unscaled
from callstream.insights.gateway import decode_party
from callstream.insights.quality import WarningState, observe
from callstream.insights.sdk_metrics import (
    SdkMetricsState,
    add_samples,
    columns,
    current_totals,
    first_sample_time,
    take_ready,
)
from callstream.model import insights as out
from callstream.model.telemetry import Location, Party, SdkSample
from tests.unit.test_insights_builders import (
    ACCOUNT,
    T0,
    CallBuilder,
    Driver,
    call_sid,
    client_call,
    trunking_call,
)


@settings(max_examples=2000)
@given(
    st.one_of(
        st.integers(0, 10**13),
        st.integers(0, 10**6).map(lambda n: n * 500),  # halfway between many multiples
        st.integers(-(10**7), 10**7),
    ),
    st.integers(0, 6),
)
def test_unscaled_rounds_as_round_does(value: int, digits: int) -> None:
    expected = round(value / SCALE, digits)
    result = unscaled(value, digits)
    assert result == expected
    assert repr(result) == repr(expected)  # the same double, signed zero included


# --- warnings: the calm and clearly-quiet shortcuts ---------------------------------------------

# Per measure, a good value and values at and around each of its rules' thresholds (missing
# ones too), so that shortcuts are tried right at their edges.
_GOOD: dict[str, Any] = {
    "rtt": 80.0,
    "jitter": 5.0,
    "loss": 0.0,
    "mos": 4.3,
    "bytes_received": 8000,
    "bytes_sent": 8000,
    "audio_in": None,  # the builder's speech, far from constant
    "audio_out": None,
}
_NEAR: dict[str, list[Any]] = {
    "rtt": [None, 399.99, 400.0, 400.01, 650.0],
    "jitter": [29.99, 30.0, 30.01, 45.0],
    "loss": [0.99, 1.0, 1.01, 2.99, 3.0, 3.01, 9.0],
    "mos": [None, 2.99, 3.0, 3.01, 1.5],
    "bytes_received": [0, 1, 2],
    "bytes_sent": [0, 1, 2],
    "audio_in": [4000.0, 4100.0, 4300.0],
    "audio_out": [7000.0, 7200.0, 7500.0],
}


@st.composite
def _batch(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Up to ten samples, good but for one measure (or none), which wanders near its rules'
    thresholds: the windows where a shortcut either just applies or just does not."""
    size = draw(st.integers(1, 10))
    stat = draw(st.sampled_from([None, *_NEAR]))
    samples = [dict(_GOOD) for _ in range(size)]
    if stat is not None:
        near = st.sampled_from([_GOOD[stat], *_NEAR[stat]])
        for sample in samples:
            sample[stat] = draw(near)
    return samples


def _observe_all(batches: list[list[SdkSample]]) -> list[Any]:
    state = SdkMetricsState()
    warnings = WarningState()
    changes: list[Any] = []
    for n, batch in enumerate(batches):
        add_samples(state, batch, T0 + 100 * n)
        for window in take_ready(state, T0 + 100 * n + 50, force=True):
            changes += observe(warnings, columns(window.slots))
    return [*changes, msgspec.msgpack.encode(warnings)]


def _same_as_in_full(batches: list[list[dict[str, Any]]]) -> list[Any]:
    """Observe the batches with and without the shortcuts; return the (equal) changes."""
    # Each batch fills (part of) its own 10-second window, so that windows of fewer than ten
    # samples leave part of the history to the next.
    b = CallBuilder()
    records = [
        [b.sample(10 * n + i, **values) for i, values in enumerate(batch)]
        for n, batch in enumerate(batches)
    ]
    quick = _observe_all(records)
    with pytest.MonkeyPatch.context() as patch:
        # Never calm, never clearly quiet: every rule takes its full path.
        patch.setattr(quality, "_calm", lambda samples: False)
        patch.setattr(quality, "_clearly_quiet", lambda rule, before, values: False)
        full = _observe_all(records)
    # The calm flag kept in the state follows the shortcut, so compare the rest of it.
    assert quick[:-1] == full[:-1]
    decode = msgspec.msgpack.Decoder(WarningState).decode
    kept, reference = decode(quick[-1]), decode(full[-1])
    assert (kept.history, kept.origin, kept.active) == (
        reference.history,
        reference.origin,
        reference.active,
    )
    return quick[:-1]


@settings(max_examples=150, deadline=None)
@given(st.lists(_batch(), min_size=1, max_size=6))
def test_warning_shortcuts_decide_as_every_rule_in_full(
    batches: list[list[dict[str, Any]]],
) -> None:
    _same_as_in_full(batches)


def test_a_calm_batch_after_crossings_kept_in_the_history_is_not_calm() -> None:
    # Crossings before any decision is made (METRICS_DELAY), then a calm batch in the next
    # window: its first windows still hold them, and raise.
    crossings = [{**_GOOD, "jitter": 45.0} for _ in range(5)]
    calm = [dict(_GOOD) for _ in range(3)]
    changes = _same_as_in_full([crossings, calm])
    assert [(c.rule.name, c.raised, c.timestamp - T0) for c in changes] == [
        ("high-jitter", True, 10)
    ]


def test_a_history_stays_uncalm_until_its_crossings_are_gone() -> None:
    # High RTT behind a missing one (no decision while it is in view), then calm batches: the
    # crossings stay in the history through the next batch, and raise once the gap is out.
    first = [dict(_GOOD) for _ in range(10)]
    first[6]["rtt"] = None
    for t in (7, 8, 9):
        first[t]["rtt"] = 500.0
    changes = _same_as_in_full([first, [dict(_GOOD)], [dict(_GOOD) for _ in range(7)]])
    assert [(c.rule.name, c.raised, c.timestamp - T0) for c in changes] == [("high-rtt", True, 25)]


# --- state --------------------------------------------------------------------------------------


def test_first_sample_time_is_the_totals_first_with_open_windows() -> None:
    b = CallBuilder()
    state = SdkMetricsState()
    add_samples(state, b.samples(10, 4)[::-1], T0 + 20)
    add_samples(state, [b.sample(3)], T0 + 21)
    assert state.windows
    assert first_sample_time(state) == current_totals(state).first == T0 + 3
    assert first_sample_time(SdkMetricsState()) is None


def test_a_party_decodes_as_the_summary_shows_it() -> None:
    party = Party(
        caller="+14155550100",
        carrier="ACME",
        connection="mobile",
        number_prefix="1415",
        location=Location(lat=37.77, lon=-122.42),
        city="San Francisco",
        country_code="US",
        country_subdivision="CA",
        ip_address="203.0.113.9",
    )
    assert decode_party(msgspec.msgpack.encode(party)) == out.CallParty(
        caller="+14155550100",
        carrier="ACME",
        connection="mobile",
        number_prefix="1415",
        location=out.Location(lat=37.77, lon=-122.42),
        city="San Francisco",
        country_code="US",
        country_subdivision="CA",
        ip_address="203.0.113.9",
    )
    assert decode_party(msgspec.msgpack.encode(Party())) == out.CallParty()


@pytest.mark.parametrize("build", [client_call, trunking_call])
def test_state_encoded_by_this_version_decodes_to_the_same_state(build: Any) -> None:
    driver = Driver(sid=call_sid(7), roundtrip=False)
    records = build(CallBuilder(call_sid(7)))
    half = len(records) // 2
    logic = driver.logic
    driver.apply(records[:half], now=20)
    for later in (lambda: driver.apply(records[half:], now=30), lambda: driver.advance(10_000)):
        encoded = logic.encode_state(driver.state)
        decoded = logic.decode_state(encoded)
        assert decoded == driver.state
        assert logic.encode_state(decoded) == encoded
        later()
    assert logic.decode_state(logic.encode_state(driver.state)) == driver.state


def test_events_carry_utc_times_built_by_the_engine() -> None:
    driver = Driver()
    driver.apply(client_call(CallBuilder()), now=40)
    driver.advance(100_000)
    for event in driver.events:
        assert event.time.tzinfo is UTC
        assert event.time == datetime.fromtimestamp(event.time.timestamp(), UTC)
    assert all(event.account_sid == ACCOUNT for event in driver.events)
