"""Telemetry records: decoding, validation errors, limits, encoding, schema, and the MOS formula."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callstream.model.mos import calculate_mos, round_mos
from callstream.model.telemetry import (
    MAX_ID_LENGTH,
    MAX_PAYLOAD_BYTES,
    MAX_PAYLOAD_KEYS,
    GatewayEvent,
    GatewayMetric,
    MillisStats,
    SdkEvent,
    SdkSample,
    TelemetryError,
    TelemetryIssue,
    decode_batch,
    decode_ndjson,
    encode_batch,
    encode_ndjson,
    encode_record,
    json_schema_bytes,
)

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "docs" / "ingest.schema.json"
CALL = "CA" + "0123456789abcdef" * 2
WHEN = "2026-03-01T12:00:00Z"


def gateway_event(**extra: Any) -> dict[str, Any]:
    return {
        "kind": "gateway_event",
        "id": "gw-1",
        "call_sid": CALL,
        "timestamp": WHEN,
        "edge": "carrier_edge",
        "name": "completed",
        "from": {"caller": "+14155550100", "country_code": "US", "connection": "mobile"},
        "to": {"callee": "client:alice", "connection": "twilio_sdk"},
        "call_type": "client",
        "direction": "outbound_api",
        "call_state": "completed",
        "sip_response_code": 200,
        "q850_cause": 16,
        "disconnected_by": "caller",
        "pdd_ms": 1800,
        "metadata": {"region": "us1", "edge_location": "ashburn", "twilio_ip": "198.51.100.7"},
        "created_time": "2026-03-01T11:58:00Z",
        "start_time": "2026-03-01T11:58:00.250Z",
        "end_time": WHEN,
        **extra,
    }


def gateway_metric(**extra: Any) -> dict[str, Any]:
    return {
        "kind": "gateway_metric",
        "id": "gm-1",
        "call_sid": CALL,
        "timestamp": WHEN,
        "edge": "sip_edge",
        "direction": "inbound",
        "codec": 0,
        "codec_name": "pcmu",
        "packets_received": 498,
        "packets_lost": 2,
        "jitter": {"avg": 1.5, "max": 7.25},
        "latency": {"avg": 20.0, "max": 31.0},
        "packet_delay_variation": {"d50": 1, "d90": 4},
        "cumulative": {"packets_received": 4980, "packets_lost": 9},
        **extra,
    }


def sdk_event(**extra: Any) -> dict[str, Any]:
    return {
        "kind": "sdk_event",
        "id": "se-1",
        "call_sid": CALL,
        "timestamp": WHEN,
        "group": "network-quality-warning-raised",
        "name": "high-rtt",
        "level": "WARNING",
        "payload": {"data": {"threshold": 400, "values": [410.0, 455.5, 600.0]}},
        "publisher_metadata": {"app_name": "softphone", "app_version": "1.0"},
        "sdk_version": "2.18.1",
        "platform": "WebRTC",
        "direction": "OUTGOING",
        "browser": {"name": "Chrome", "major": "124", "version": "124.0.1"},
        **extra,
    }


def sdk_sample(**extra: Any) -> dict[str, Any]:
    return {
        "kind": "sdk_sample",
        "id": "ss-1",
        "call_sid": CALL,
        "timestamp": WHEN,
        "audio_codec": "opus",
        "audio_level_in": 81,
        "audio_level_out": 5237,
        "bytes_received": 5000,
        "bytes_sent": 4900,
        "call_volume_input": 0.002,
        "call_volume_output": 0.16,
        "jitter": 9,
        "mos": 4.39,
        "packets_lost": 0,
        "packets_lost_fraction": 0.0,
        "packets_received": 50,
        "rtt": 81,
        "total_bytes_received": 547788,
        "total_bytes_sent": 329425,
        "total_packets_lost": 0,
        "total_packets_received": 3900,
        "total_packets_sent": 3934,
        **extra,
    }


def as_json(*records: dict[str, Any]) -> bytes:
    return json.dumps(list(records)).encode()


def as_ndjson(*records: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def issues(raw: bytes, *, ndjson: bool = False) -> list[TelemetryIssue]:
    with pytest.raises(TelemetryError) as caught:
        (decode_ndjson if ndjson else decode_batch)(raw)
    return caught.value.errors


# --- decoding ---


def test_a_mixed_batch_decodes_each_kind_to_its_struct() -> None:
    records = decode_batch(as_json(gateway_event(), gateway_metric(), sdk_event(), sdk_sample()))
    assert [type(r) for r in records] == [GatewayEvent, GatewayMetric, SdkEvent, SdkSample]
    event, metric, sdk, sample = records
    assert isinstance(event, GatewayEvent) and event.from_ is not None
    assert event.from_.caller == "+14155550100"
    assert event.group == "connection" and event.level == "INFO"  # defaults
    assert isinstance(metric, GatewayMetric)
    assert metric.jitter == MillisStats(avg=1.5, max=7.25)
    assert metric.interval_seconds == 10.0
    assert isinstance(sdk, SdkEvent) and sdk.payload is not None
    assert sdk.payload["data"]["threshold"] == 400
    assert isinstance(sample, SdkSample) and sample.mos == 4.39


@pytest.mark.parametrize("make", [gateway_event, gateway_metric, sdk_event, sdk_sample])
def test_each_kind_round_trips_through_json_and_ndjson(make: Any) -> None:
    records = decode_batch(as_json(make(), make(id="second")))
    assert decode_batch(encode_batch(records)) == records
    assert decode_ndjson(encode_ndjson(records)) == records
    assert [decode_batch(b"[" + encode_record(r) + b"]")[0] for r in records] == records


def test_the_first_sample_of_a_call_may_have_a_null_mos() -> None:
    (sample,) = decode_batch(as_json(sdk_sample(mos=None)))
    assert isinstance(sample, SdkSample) and sample.mos is None
    # null is allowed, absence is not: the member is part of every sample.
    no_mos = sdk_sample()
    del no_mos["mos"]
    assert issues(as_json(no_mos)) == [
        TelemetryIssue(0, "mos", "Object missing required field `mos`")
    ]


def test_timestamps_with_an_offset_are_stored_as_utc() -> None:
    (event,) = decode_batch(
        as_json(
            gateway_event(
                timestamp="2026-03-01T14:00:00+02:00", end_time="2026-03-01T07:00:00-05:00"
            )
        )
    )
    assert event.timestamp == datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert event.timestamp.tzinfo is UTC
    assert isinstance(event, GatewayEvent) and event.end_time is not None
    assert event.end_time.tzinfo is UTC and event.end_time.hour == 12


def test_a_struct_built_in_code_is_normalised_to_utc_too() -> None:
    plus_two = timezone(timedelta(hours=2))
    metric = GatewayMetric(
        id="x",
        call_sid=CALL,
        timestamp=datetime(2026, 3, 1, 14, tzinfo=plus_two),
        edge="sip_edge",
        direction="outbound",
        codec=0,
    )
    assert metric.timestamp == datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert metric.timestamp.tzinfo is UTC


def test_every_bad_record_is_named_with_its_index_field_and_reason() -> None:
    bad_sid = gateway_event(call_sid="CA-nope")
    no_edge = gateway_metric()
    del no_edge["edge"]
    negative_jitter = gateway_metric(jitter={"avg": -1, "max": 3})
    unknown_kind = sdk_event(kind="sdk_thing")
    unknown_field = sdk_sample(colour="blue")
    naive_time = sdk_event(timestamp="2026-03-01T12:00:00")
    batch = as_json(
        gateway_event(),
        bad_sid,
        no_edge,
        negative_jitter,
        unknown_kind,
        unknown_field,
        naive_time,
        sdk_sample(),
    )
    found = issues(batch)
    assert [(i.record_index, i.field) for i in found] == [
        (1, "call_sid"),
        (2, "edge"),
        (3, "jitter.avg"),
        (4, "kind"),
        (5, "colour"),
        (6, "timestamp"),
    ]
    reasons = [i.reason for i in found]
    assert "regex" in reasons[0]
    assert reasons[1] == "Object missing required field `edge`"
    assert ">= 0" in reasons[2]
    assert "sdk_thing" in reasons[3]
    assert "unknown field `colour`" in reasons[4]
    assert "timezone" in reasons[5]


def test_the_error_message_summarises_the_first_issue() -> None:
    with pytest.raises(TelemetryError) as caught:
        decode_batch(as_json(gateway_event(), gateway_event(level="LOUD"), gateway_event(edge="x")))
    message = str(caught.value)
    assert message.startswith("record 1 field 'level': ")
    assert message.endswith("(and 1 more)")
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("raw", "reason_part"),
    [
        (b'{"kind": "gateway_event"}', "Expected `array`, got `object`"),
        (b"[{]", "malformed"),
        (b"", "truncated"),
    ],
)
def test_an_unreadable_batch_is_one_issue_without_an_index(raw: bytes, reason_part: str) -> None:
    (issue,) = issues(raw)
    assert issue.record_index is None
    assert reason_part in issue.reason


def test_a_record_that_is_not_an_object_is_named() -> None:
    assert issues(as_json(sdk_sample())[:-1] + b", 42]") == [
        TelemetryIssue(1, "", "Expected `object`, got `int`")
    ]


def test_ndjson_skips_blank_lines_and_counts_records_not_lines() -> None:
    raw = as_ndjson(gateway_event()) + b"\n   \n" + as_ndjson(sdk_sample())
    assert [type(r) for r in decode_ndjson(raw)] == [GatewayEvent, SdkSample]
    bad = as_ndjson(gateway_event()) + b"\n" + as_ndjson(sdk_sample(rtt=-5), sdk_event())
    assert [(i.record_index, i.field) for i in issues(bad, ndjson=True)] == [(1, "rtt")]


def test_ndjson_names_a_line_that_is_not_json() -> None:
    raw = as_ndjson(gateway_event()) + b"{not json\n" + as_ndjson(sdk_event(name=""))
    found = issues(raw, ndjson=True)
    assert [(i.record_index, i.field) for i in found] == [(1, ""), (2, "name")]
    assert "malformed" in found[0].reason


# --- limits ---


def test_id_length_is_bounded() -> None:
    decode_batch(as_json(sdk_event(id="x" * MAX_ID_LENGTH)))
    assert [i.field for i in issues(as_json(sdk_event(id="x" * (MAX_ID_LENGTH + 1))))] == ["id"]
    assert [i.field for i in issues(as_json(sdk_event(id="has space")))] == ["id"]
    assert [i.field for i in issues(as_json(sdk_event(id="")))] == ["id"]


def test_strings_maps_and_payloads_are_bounded() -> None:
    too_many_keys = {f"k{n}": n for n in range(MAX_PAYLOAD_KEYS + 1)}
    too_big = {"blob": "x" * MAX_PAYLOAD_BYTES}
    pdv = {f"d{n}": 1 for n in range(17)}
    cases = [
        (sdk_event(payload=too_many_keys), "payload"),
        (sdk_event(payload=too_big), "payload"),
        (sdk_event(name="n" * 65), "name"),
        (gateway_event(**{"from": {"city": "c" * 257}}), "from.city"),
        (gateway_metric(packet_delay_variation=pdv), "packet_delay_variation"),
        (gateway_metric(packet_delay_variation={"p50": 3}), "packet_delay_variation"),
        (gateway_event(sip_response_code=99), "sip_response_code"),
        (sdk_sample(packets_lost_fraction=100.5), "packets_lost_fraction"),
        (sdk_sample(audio_level_in=40000), "audio_level_in"),
        (sdk_sample(mos=5.5), "mos"),
        (gateway_metric(codec=128), "codec"),
    ]
    found = issues(as_json(*(record for record, _ in cases)))
    assert [(i.record_index, i.field) for i in found] == [
        (n, field) for n, (_, field) in enumerate(cases)
    ]
    assert f"larger than {MAX_PAYLOAD_BYTES} bytes" in found[1].reason


def test_payloads_at_the_limits_are_accepted() -> None:
    keys = {f"k{n}": n for n in range(MAX_PAYLOAD_KEYS)}
    decode_batch(as_json(sdk_event(payload=keys), sdk_event(payload={"blob": "x" * 1000})))


# --- schema ---


def test_the_committed_json_schema_is_the_generated_one() -> None:
    assert SCHEMA_FILE.read_bytes() == json_schema_bytes(), (
        "docs/ingest.schema.json is stale: regenerate it with "
        "`.venv/bin/python -m callstream.model.telemetry > docs/ingest.schema.json`"
    )


def test_the_schema_accepts_the_examples_and_rejects_what_the_decoder_rejects() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_bytes()))
    for record in (gateway_event(), gateway_metric(), sdk_event(), sdk_sample()):
        validator.validate(record)
    assert not validator.is_valid(gateway_event(call_sid="CA1"))
    assert not validator.is_valid(sdk_sample(colour="blue"))


# --- property: any valid sample survives encode/decode unchanged ---

counts = st.integers(min_value=0, max_value=10**9)
millis = st.floats(min_value=0, max_value=60_000, allow_nan=False)


@given(
    jitter=millis,
    rtt=st.none() | millis,
    mos=st.none() | st.floats(min_value=1, max_value=5),
    lost=counts,
    received=counts,
    fraction=st.floats(min_value=0, max_value=100),
    level=st.floats(min_value=0, max_value=32767),
    offset_minutes=st.integers(min_value=-720, max_value=720),
)
def test_valid_samples_round_trip(
    jitter: float,
    rtt: float | None,
    mos: float | None,
    lost: int,
    received: int,
    fraction: float,
    level: float,
    offset_minutes: int,
) -> None:
    zone = timezone(timedelta(minutes=offset_minutes))
    sample = SdkSample(
        id="p-1",
        call_sid=CALL,
        timestamp=datetime(2026, 3, 1, 12, tzinfo=zone),
        audio_codec="opus",
        audio_level_in=level,
        audio_level_out=level,
        bytes_received=received,
        bytes_sent=received,
        call_volume_input=0.5,
        call_volume_output=0.5,
        jitter=jitter,
        mos=mos,
        packets_lost=lost,
        packets_lost_fraction=fraction,
        packets_received=received,
        rtt=rtt,
        total_bytes_received=received,
        total_bytes_sent=received,
        total_packets_lost=lost,
        total_packets_received=received,
        total_packets_sent=received,
    )
    assert decode_ndjson(encode_ndjson([sample])) == [sample]


# --- MOS (reference §7) ---


@pytest.mark.parametrize(
    ("rtt", "jitter", "loss", "expected"),
    [
        (0, 0, 0, 4.433328),
        (20, 5, 0, 4.420009),
        (50, 10, 0, 4.400768),
        (81, 9, 0, 4.385780),
        (100, 20, 1, 4.301023),
        (150, 30, 2, 4.015200),
        (300, 30, 5, 2.957580),
        (400, 50, 10, 1.641004),
        (600, 100, 20, 1.000000),
        (1000, 0, 0, 1.000031),
    ],
)
def test_mos_matches_the_reference_vectors(
    rtt: float, jitter: float, loss: float, expected: float
) -> None:
    mos = calculate_mos(rtt, jitter, loss)
    assert mos is not None
    assert round(mos, 6) == pytest.approx(expected, abs=5e-7)


def test_mos_is_null_without_a_previous_sample_or_with_bad_inputs() -> None:
    # The SDK passes no loss fraction for a call's first sample.
    assert calculate_mos(81, 9, None) is None
    assert calculate_mos(None, 9, 0) is None
    assert calculate_mos(81, -1, 0) is None
    assert calculate_mos(math.nan, 9, 0) is None
    assert calculate_mos(81, math.inf, 0) is None


def test_published_mos_is_rounded_half_up_to_two_decimals() -> None:
    assert round_mos(calculate_mos(81, 9, 0)) == 4.39
    assert round_mos(2.125) == 2.13  # round() would give 2.12
    assert round_mos(None) is None


def test_the_examples_in_the_ingest_docs_are_valid_records() -> None:
    text = (SCHEMA_FILE.parent / "ingest.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```json\n")[1:]]
    examples = [b for b in blocks if '"kind"' in b]
    assert len(examples) == 4
    records = decode_batch(("[" + ",".join(examples) + "]").encode())
    assert [type(r) for r in records] == [GatewayEvent, GatewayMetric, SdkEvent, SdkSample]
