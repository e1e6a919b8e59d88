"""Pieces of the Voice Insights read path that need no store: the identity prefixes the SQLite
store filters on, and Twilio's relative and ISO time filters. The store's behaviour itself is
tested on every backend in tests/stores/test_insights_contract.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from callstream.api.voice_insights import parse_moment
from callstream.model.insights import EDGES, CallEvent, CallMetric
from callstream.store.sqlite.insights import event_identity_prefix, metric_identity_prefix

ACCOUNT = "AC" + "1" * 32
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def call(n: int) -> str:
    return f"CA{n:032x}"


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
