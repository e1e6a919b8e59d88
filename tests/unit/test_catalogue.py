"""The event-type catalogue: what subscriptions and the Types API will offer."""

import pytest

from callstream.model.catalogue import UnknownEventType, UnknownSchema, catalogue

CALL_INSIGHTS = {
    "com.twilio.voice.insights.call-event.gateway": ("VoiceInsights.CallEvent", 3),
    "com.twilio.voice.insights.call-event.sdk": ("VoiceInsights.CallEvent", 3),
    "com.twilio.voice.insights.call-metrics.gateway": ("VoiceInsights.CallMetric", 2),
    "com.twilio.voice.insights.call-metrics.sdk": ("VoiceInsights.CallMetric", 2),
    "com.twilio.voice.insights.call-summary.partial": ("VoiceInsights.CallSummary", 2),
    "com.twilio.voice.insights.call-summary.predicted-complete": ("VoiceInsights.CallSummary", 2),
    "com.twilio.voice.insights.call-summary.complete": ("VoiceInsights.CallSummary", 2),
}


def test_the_seven_call_insights_types_and_their_latest_versions() -> None:
    cat = catalogue()
    assert set(cat.call_insights_types()) == set(CALL_INSIGHTS)
    for type_, (schema_id, latest) in CALL_INSIGHTS.items():
        assert cat.event_type(type_).schema_id == schema_id
        assert cat.schema_of(type_).latest_version == latest
        assert cat.resolve_version(type_, None) == latest


def test_supported_versions_per_schema() -> None:
    cat = catalogue()
    assert cat.schema("VoiceInsights.CallEvent").versions == (1, 2, 3)
    assert cat.schema("VoiceInsights.CallMetric").versions == (1, 2)
    assert cat.schema("VoiceInsights.CallSummary").versions == (1, 2)
    assert cat.schema("EventStreams.TestSink").versions == (1,)


def test_every_type_has_description_status_and_documentation() -> None:
    for event_type in catalogue().types:
        assert event_type.description
        assert event_type.status == "available"
        assert event_type.documentation_url and event_type.documentation_url.startswith("https://")


def test_sources_follow_the_rest_paths() -> None:
    cat = catalogue()
    sid = "CA" + "0" * 32
    assert cat.event_type("com.twilio.voice.insights.call-event.sdk").source_for(call_sid=sid) == (
        f"/v1/Voice/{sid}/Events"
    )
    assert cat.event_type("com.twilio.voice.insights.call-metrics.gateway").source_for(
        call_sid=sid
    ) == (f"/v1/Voice/{sid}/Metrics")
    assert cat.event_type("com.twilio.voice.insights.call-summary.complete").source_for(
        call_sid=sid
    ) == (f"/v1/Voice/{sid}/Summary")
    assert cat.event_type("com.twilio.eventstreams.test-event").source_for(call_sid="") == "Sink"


def test_dataschema_urls() -> None:
    cat = catalogue()
    base = "https://events-schemas.twilio.com"
    assert (
        cat.schema("VoiceInsights.CallSummary").dataschema(1, base)
        == "https://events-schemas.twilio.com/VoiceInsights.CallSummary/1"
    )
    assert (
        cat.schema("EventStreams.TestSink").dataschema(1, base + "/")
        == "https://events-schemas.twilio.com/EventStreams.TestSink/1.json"
    )
    assert (
        cat.schema("VoiceInsights.CallMetric").dataschema(2, "http://127.0.0.1:8080/schemas")
        == "http://127.0.0.1:8080/schemas/VoiceInsights.CallMetric/2"
    )


def test_unknown_types_and_versions_are_refused() -> None:
    cat = catalogue()
    with pytest.raises(UnknownEventType):
        cat.event_type("com.twilio.voice.insights.call-event.nope")
    with pytest.raises(UnknownSchema):
        cat.resolve_version("com.twilio.voice.insights.call-metrics.sdk", 3)
    with pytest.raises(UnknownSchema):
        cat.schema("VoiceInsights.Nope")
    with pytest.raises(UnknownSchema):
        cat.schema("VoiceInsights.CallEvent").dataschema(0, "https://x")
