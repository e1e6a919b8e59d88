"""The CloudEvents envelope: Twilio's attributes, deterministic ids, read by the SDK."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_structured_event
from hypothesis import given, settings
from hypothesis import strategies as st

from callstream.cloudevents import encode_batch, event_id, format_time, to_cloudevent
from callstream.model.catalogue import catalogue
from callstream.model.insights import CallSummary, InsightEvent, TestEvent
from tests.unit.strategies_insights import insight_events, validator

EZ = re.compile(r"^EZ[0-9a-f]{32}$")
TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def _parse(envelope: dict[str, object]) -> object:
    body = json.dumps(envelope).encode()
    return from_structured_event(
        HTTPMessage(headers={"content-type": "application/cloudevents+json"}, body=body)
    )


@settings(max_examples=150, deadline=None)
@given(event=insight_events(), data=st.data())
def test_every_envelope_parses_with_the_cloudevents_sdk(
    event: InsightEvent, data: st.DataObject
) -> None:
    schema = catalogue().schema(event.schema_id)
    version = data.draw(st.sampled_from(schema.versions))
    envelope = msgspec.to_builtins(to_cloudevent(event, version))
    parsed = _parse(envelope)
    assert parsed.get_specversion() == "1.0"  # type: ignore[attr-defined]
    assert parsed.get_type() == event.event_type  # type: ignore[attr-defined]
    assert parsed.get_id() == envelope["id"]  # type: ignore[attr-defined]
    assert parsed.get_source() == envelope["source"]  # type: ignore[attr-defined]
    assert parsed.get_data() == envelope["data"]  # type: ignore[attr-defined]
    parsed_time = parsed.get_time()  # type: ignore[attr-defined]
    assert abs(parsed_time - event.time) < timedelta(milliseconds=1)
    assert EZ.match(str(envelope["id"]))
    assert TIME.match(str(envelope["time"]))
    assert envelope["datacontenttype"] == "application/json"
    assert envelope["dataschema"] == (
        f"https://events-schemas.twilio.com/{event.schema_id}/{version}"
        + (".json" if isinstance(event, TestEvent) else "")
    )
    if event.call_sid is not None:
        kind = {"VoiceInsights.CallEvent": "Events", "VoiceInsights.CallMetric": "Metrics"}
        assert envelope["source"] == (
            f"/v1/Voice/{event.call_sid}/{kind.get(event.schema_id, 'Summary')}"
        )
    else:
        assert envelope["source"] == "Sink"
    assert validator(event.schema_id, version).is_valid(envelope["data"])


@settings(max_examples=50, deadline=None)
@given(event=insight_events())
def test_ids_are_deterministic_and_differ_by_version(event: InsightEvent) -> None:
    versions = catalogue().schema(event.schema_id).versions
    first = [to_cloudevent(event, v) for v in versions]
    again = [
        to_cloudevent(msgspec.msgpack.decode(msgspec.msgpack.encode(event), type=type(event)), v)
        for v in versions
    ]
    assert first == again  # a re-emitted event is byte-for-byte the same
    assert len({e.id for e in first}) == len(versions)


def test_the_id_depends_on_every_part_of_the_identity() -> None:
    base = dict(
        account_sid="AC" + "1" * 32,
        call_sid="CA" + "2" * 32,
        event_type="com.twilio.voice.insights.call-summary.partial",
        identity="summary/partial/1",
        schema_version=2,
    )
    ids = {event_id(**base)}  # type: ignore[arg-type]
    for field, other in [
        ("account_sid", "AC" + "3" * 32),
        ("call_sid", "CA" + "4" * 32),
        ("event_type", "com.twilio.voice.insights.call-summary.complete"),
        ("identity", "summary/partial/2"),
        ("schema_version", 1),
    ]:
        ids.add(event_id(**{**base, field: other}))  # type: ignore[arg-type]
    assert len(ids) == 6
    assert all(EZ.match(i) for i in ids)


def test_time_is_utc_with_milliseconds() -> None:
    moment = datetime(2020, 7, 23, 22, 56, 33, 987654, tzinfo=timezone(timedelta(hours=2)))
    assert format_time(moment) == "2020-07-23T20:56:33.987Z"
    assert format_time(datetime(2020, 7, 23, tzinfo=UTC)) == "2020-07-23T00:00:00.000Z"
    with pytest.raises(ValueError):
        format_time(datetime(2020, 7, 23))


def test_latest_version_by_default_and_a_configurable_schema_base() -> None:
    summary = CallSummary(
        account_sid="AC" + "a" * 32,
        call_sid="CA" + "b" * 32,
        time=datetime(2026, 1, 1, tzinfo=UTC),
        kind="predicted-complete",
        processing_state="partial",
        processing_version=3,
        call_type="carrier",
        call_state="completed",
    )
    envelope = to_cloudevent(summary, schema_base_url="http://127.0.0.1:8080/schemas/")
    assert envelope.dataschema == "http://127.0.0.1:8080/schemas/VoiceInsights.CallSummary/2"
    assert envelope.type == "com.twilio.voice.insights.call-summary.predicted-complete"
    assert envelope.data["processing_state"] == "partial"


def test_a_webhook_body_is_a_compact_json_array_in_twilio_attribute_order() -> None:
    test_event = TestEvent(
        account_sid="AC" + "1" * 32,
        sink_sid="DG" + "2" * 32,
        test_id="cae2f9e2-c277-4612-8ad3-93c1a7a3ef88",
        time=datetime(2026, 6, 10, 6, 2, 54, 377000, tzinfo=UTC),
    )
    body = encode_batch([to_cloudevent(test_event)])
    assert b" " not in body
    decoded = json.loads(body)
    assert isinstance(decoded, list) and len(decoded) == 1
    assert list(decoded[0]) == [
        "specversion",
        "type",
        "source",
        "id",
        "dataschema",
        "datacontenttype",
        "time",
        "data",
    ]
    assert decoded[0]["data"] == {"test_id": "cae2f9e2-c277-4612-8ad3-93c1a7a3ef88"}
    assert decoded[0]["time"] == "2026-06-10T06:02:54.377Z"
