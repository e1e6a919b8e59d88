"""The pure parts of delivery: the throttle's cap over time, request batching by count and
bytes, and the delivery settings as flags/env/TOML see them."""

from __future__ import annotations

from pathlib import Path

import pytest

from callstream.config import SettingsError, load_settings
from callstream.store.delivery import Delivery
from callstream.streams.delivery import DeliveryConfig, batches
from callstream.streams.throttle import ThrottlePolicy

POLICY = ThrottlePolicy(rate=100.0, factor=0.99, floor=1.0, recovery=300.0)


def test_first_failure_caps_at_the_rate_and_each_further_one_cuts_it_to_99_percent() -> None:
    assert POLICY.current(None, None, 1000.0) is None
    cap = POLICY.after_failure(None, None, 1000.0)
    assert cap == 100.0
    cap = POLICY.after_failure(cap, 1000.0, 1001.0)
    assert cap == pytest.approx(99.0)
    cap = POLICY.after_failure(cap, 1001.0, 1002.0)
    assert cap == pytest.approx(98.01)
    for step in range(2000):  # never under the floor
        cap = POLICY.after_failure(cap, 1002.0 + step, 1003.0 + step)
    assert cap == 1.0


def test_the_cap_holds_for_the_quiet_period_then_ramps_back_and_lifts() -> None:
    assert POLICY.current(50.0, 0.0, 299.0) == 50.0
    assert POLICY.current(50.0, 0.0, 301.0) == pytest.approx(100.0)  # doubled after 1 s
    assert POLICY.current(50.0, 0.0, 303.0) == pytest.approx(400.0)
    assert POLICY.current(50.0, 0.0, 305.0) is None  # past 10x the rate: lifted
    # A failure while ramping back caps at the rate again, not at the ramped value.
    assert POLICY.after_failure(50.0, 0.0, 303.0) == pytest.approx(99.0)
    # Long after: not throttled, so a failure starts over at the rate.
    assert POLICY.after_failure(50.0, 0.0, 10_000.0) == 100.0


def _item(n: int, size: int) -> Delivery:
    return Delivery(
        id=n,
        account_sid="AC",
        sink_sid="DG",
        event_id=f"EZ{n}",
        body=b"x" * size,
        enqueued_at=0.0,
        attempts=0,
    )


def test_batches_respect_count_and_bytes_and_keep_order() -> None:
    items = [_item(n, 10) for n in range(25)]
    cut = batches(items, 10, 1_000_000)
    assert [len(b) for b in cut] == [10, 10, 5]
    assert [i.id for b in cut for i in b] == list(range(25))
    # 2 brackets + 10 bytes per event + commas: four events are 43 bytes, five 54.
    assert [len(b) for b in batches(items[:10], 100, 50)] == [4, 4, 2]
    # One event larger than the limit still goes, alone.
    big = [_item(0, 5), _item(1, 500), _item(2, 5)]
    assert [[i.id for i in b] for b in batches(big, 100, 100)] == [[0], [1], [2]]


def test_delivery_settings_from_env_toml_and_flags(tmp_path: Path) -> None:
    toml = tmp_path / "callstream.toml"
    toml.write_text('delivery_retry_window = "2h"\nsink_failure_threshold = 5\n')
    settings = load_settings(
        {"delivery_timeout": "1500ms"},
        {"CALLSTREAM_DELIVERY_RETRY_BASE": "0.1s", "CALLSTREAM_DELIVERY_CONCURRENCY": "8"},
        toml,
    )
    config = DeliveryConfig.from_settings(settings)
    assert (config.retry_base, config.concurrency, config.timeout) == (0.1, 8, 1.5)
    assert (config.retry_window, config.failure_threshold) == (7200.0, 5)
    assert config.throttle.rate == 100.0 and config.throttle.recovery == 300.0
    assert config.batch_bytes == 1024 * 1024 and config.linger == 0.05
    with pytest.raises(SettingsError, match="DELIVERY_CONCURRENCY"):
        DeliveryConfig.from_settings(load_settings({"delivery_concurrency": 0}, {}))
    with pytest.raises(SettingsError, match="duration"):
        load_settings({}, {"CALLSTREAM_DELIVERY_LINGER": "soon"})
