"""How raw twilio-voice.js events map into ``sdk_edge`` (reference §2.4, inferred mapping)."""

from __future__ import annotations

from typing import Any

import pytest

from callstream.model.insights import CallEvent
from callstream.model.telemetry import Browser, DeviceInfo, OsInfo, PublisherMetadata
from tests.unit.test_insights_builders import CallBuilder, Driver, call_events


def _event(group: str, name: str, level: str = "INFO", **extra: Any) -> CallEvent:
    (event,) = call_events(
        Driver().apply([CallBuilder().sdk_event(1, group, name, level, **extra)], now=2)
    )
    assert event.edge == "sdk_edge" and event.sdk is not None
    return event


def test_error_code_and_message() -> None:
    event = _event("connection", "error", "ERROR", payload={"code": 31003, "message": "lost"})
    assert event.sdk is not None and event.sdk.error is not None
    assert (event.sdk.error.code, event.sdk.error.message) == (31003, "lost")
    assert event.level == "ERROR" and event.sdk.metric is None


def test_get_user_media_error_text() -> None:
    payload = {"data": {"audioConstraints": True, "error": "NotAllowedError"}}
    event = _event("get-user-media", "denied", "ERROR", payload=payload)
    assert event.sdk is not None and event.sdk.error is not None
    assert event.sdk.error.message == "NotAllowedError" and event.sdk.error.code is None


@pytest.mark.parametrize(
    ("data", "values"),
    [
        ({"threshold": 400, "values": [401.234, 500, 650.5]}, (401.23, 500.0, 650.5)),
        ({"threshold": 327.67, "value": 12.345}, (12.35,)),
    ],
)
def test_warning_metric(data: dict[str, Any], values: tuple[float, ...]) -> None:
    event = _event("network-quality-warning-raised", "high-rtt", "WARNING", payload={"data": data})
    assert event.sdk is not None and event.sdk.metric is not None
    assert event.sdk.metric.threshold == data["threshold"]
    assert event.sdk.metric.values == values


def test_feedback_becomes_score_and_reason() -> None:
    payload = {"issue_name": "echo", "quality_score": 2}
    event = _event("feedback", "received", payload=payload)
    assert event.sdk is not None and event.sdk.feedback is not None
    assert (event.sdk.feedback.score, event.sdk.feedback.reason) == (2, "echo")


def test_events_without_a_known_payload_carry_only_metadata() -> None:
    event = _event("signaling-state", "stable", "DEBUG", payload={"whatever": [1, 2]})
    assert event.sdk is not None
    assert (event.sdk.error, event.sdk.metric, event.sdk.feedback) == (None, None, None)
    assert event.sdk.ice_candidate_pair is None and event.sdk.metadata is not None


def test_sdk_metadata() -> None:
    event = _event(
        "connection",
        "incoming",
        client_name="alice",
        region="us1",
        browser=Browser(name="Chrome", major="120", version="120.0.1"),
        os=OsInfo(name="macOS", version="14"),
        device=DeviceInfo(vendor="Apple"),
        publisher_metadata=PublisherMetadata(app_name="softphone", app_version="3.1"),
    )
    assert event.sdk is not None and event.sdk.metadata is not None
    metadata = event.sdk.metadata
    assert metadata.client_name == "alice" and metadata.sdk is not None
    sdk = metadata.sdk
    assert (sdk.type, sdk.version, sdk.platform, sdk.region) == (
        "twilio-js-sdk",
        "2.18.0",
        "browser",
        "us1",
    )
    assert sdk.browser is not None and sdk.browser.major == "120"
    assert sdk.os is not None and sdk.os.name == "macOS"
    assert sdk.device is not None and sdk.device.vendor == "Apple" and sdk.device.model is None
    assert sdk.app is not None and sdk.app.name == "softphone"
