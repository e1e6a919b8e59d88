"""Every event the call logic produces renders to a document its schema version accepts."""

from __future__ import annotations

from functools import cache

import pytest
from jsonschema import Draft7Validator, FormatChecker

from callstream.cloudevents import to_cloudevent
from callstream.insights.call import CallInsights
from callstream.insights.step import EngineConfig
from callstream.model.catalogue import catalogue
from callstream.model.insights import InsightEvent
from callstream.model.telemetry import TelemetryRecord
from callstream.schemas import load_schema
from tests.unit.test_insights_builders import (
    CallBuilder,
    Driver,
    client_call,
    pstn_call,
    trunking_call,
)


@cache
def _validator(schema_id: str, version: int) -> Draft7Validator:
    return Draft7Validator(load_schema(schema_id, version), format_checker=FormatChecker())


def _poor_client_call() -> list[TelemetryRecord]:
    b = CallBuilder()
    records = client_call(b, talk=40, rtt=450, jitter=35, loss=6, audio_in=900.0)
    records += [
        b.sdk_event(2, "get-user-media", "failed", "ERROR", payload={"data": {"error": "denied"}}),
        b.sdk_event(9, "connection", "error", "ERROR", payload={"code": 31600, "message": "x"}),
        b.sdk_event(
            10,
            "audio-level-warning-raised",
            "constant-audio-output-level",
            "INFO",
            payload={"data": {"threshold": 327.67, "value": 12.5}},
        ),
        b.sdk_event(
            11, "settings", "edge", payload={"edge": "roaming", "selected_edge": ["dublin"]}
        ),
    ]
    return records


def _idle_call() -> list[TelemetryRecord]:
    return pstn_call(CallBuilder())[:-1]


CALLS = {
    "pstn": lambda: pstn_call(CallBuilder()),
    "trunking": lambda: trunking_call(CallBuilder()),
    "client": lambda: client_call(CallBuilder()),
    "poor client": _poor_client_call,
    "never ended": _idle_call,
}


def _events(records: list[TelemetryRecord]) -> list[InsightEvent]:
    driver = Driver(CallInsights(EngineConfig(partial_after=10, complete_after=600)))
    driver.apply(records, now=60)
    driver.advance(100_000)
    return driver.events


@pytest.mark.parametrize("call", list(CALLS))
def test_every_event_validates_in_every_schema_version(call: str) -> None:
    events = _events(CALLS[call]())
    assert events
    kinds = set()
    for event in events:
        kinds.add(event.event_type)
        versions = catalogue().schema(event.schema_id).versions
        for version in versions:
            data = to_cloudevent(event, version).data
            problems = [e.message for e in _validator(event.schema_id, version).iter_errors(data)]
            assert problems == [], (event.event_type, version, problems[:3])
    assert "com.twilio.voice.insights.call-summary.complete" in kinds


def test_the_poor_call_exercises_warnings_and_sdk_metrics() -> None:
    types = {e.event_type for e in _events(_poor_client_call())}
    assert {
        "com.twilio.voice.insights.call-event.sdk",
        "com.twilio.voice.insights.call-event.gateway",
        "com.twilio.voice.insights.call-metrics.sdk",
        "com.twilio.voice.insights.call-metrics.gateway",
        "com.twilio.voice.insights.call-summary.partial",
        "com.twilio.voice.insights.call-summary.predicted-complete",
        "com.twilio.voice.insights.call-summary.complete",
    } <= types
