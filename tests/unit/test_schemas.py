"""The packaged JSON Schemas: well-formed, strict, versioned as documented, and faithful to the
stream-shaped examples in the reference.

REST-shaped examples, which differ from the stream shape, are covered in test_render.py.
"""

import copy
import json
import pathlib
import re
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

import msgspec
import pytest
from jsonschema import Draft7Validator

from callstream.model import insights as m
from callstream.schemas import UnknownSchema, load_schema, schema_ids, schema_versions
from callstream.schemas.render import render, supported_versions
from tests.unit.strategies_insights import errors

EXPECTED_VERSIONS = {
    "EventStreams.TestSink": [1],
    "VoiceInsights.CallEvent": [1, 2, 3],
    "VoiceInsights.CallMetric": [1, 2],
    "VoiceInsights.CallSummary": [1, 2],
}
ALL_SCHEMAS = [(sid, v) for sid, versions in EXPECTED_VERSIONS.items() for v in versions]
VOICE_INSIGHTS_SCHEMAS = [(sid, v) for sid, v in ALL_SCHEMAS if sid.startswith("VoiceInsights.")]

ACCOUNT = "AC00000000000000000000000000000000"
CALL = "CA00000000000000000000000000000000"

# ---------------------------------------------------------------------------------------------
# Reference examples in stream shape
# ---------------------------------------------------------------------------------------------

SEED_FILE = pathlib.Path("/work/shared/reference/seeds/000_1f8301e34a2e7e60.txt")

# `data` of the Gateway Call Event example (CallEvent/3) from reference seed 000, with the docs
# listing's line numbers stripped (test_embedded_seed_matches_reference checks this copy). Its
# SIDs are 33 characters long and its edge "ashburn" is not an edge: docs placeholders.
SEED_CALL_EVENT_V3: dict[str, Any] = {
    "timestamp": "2021-05-24T14:15:22Z",
    "call_sid": "CA0000000000000000000000000000001",
    "account_sid": "AC0000000000000000000000000000001",
    "edge": "ashburn",
    "name": "call.connected",
    "group": "call",
    "level": "UNKNOWN",
    "carrier_edge": {
        "metadata": {
            "region": "us1",
            "twilio_ip": "172.0.0.130",
            "external_ip": "172.0.0.130",
            "edge_location": "ashburn",
        }
    },
    "client_edge": {
        "metadata": {
            "region": "us1",
            "twilio_ip": "172.0.0.130",
            "external_ip": "172.0.0.130",
            "edge_location": "ashburn",
        }
    },
    "sip_edge": {
        "metadata": {
            "region": "us1",
            "twilio_ip": "172.0.0.130",
            "external_ip": "172.0.0.130",
            "edge_location": "ashburn",
        }
    },
    "sdk_edge": {
        "error": {"code": 31600, "message": "Call failed due to network issues."},
        "feedback": {"score": 1, "reason": "excellent_audio"},
        "metric": {"threshold": 0.5, "values": [0.1]},
        "ice_candidate_pair": {
            "remote": {"type": "host", "protocol": "udp"},
            "local": {"type": "host", "protocol": "udp"},
        },
        "metadata": {
            "client_name": "MyVoiceApp",
            "location": {"lat": 20.956036, "lon": -157.23793},
            "city": "San Francisco",
            "country_code": "US",
            "country_subdivision": "CA",
            "ip_address": "172.0.0.130",
            "sdk": {
                "type": "Voice",
                "version": "2.0.0",
                "platform": "iOS",
                "region": "us1",
                "selected_region": "us1",
                "browser": {"name": "Chrome", "major": "89", "version": "89.0.4389.90"},
                "os": {"name": "Windows", "version": "10"},
                "device": {"model": "iPhone", "type": "mobile", "vendor": "Apple", "arch": "ARM"},
                "engine": {"name": "Blink", "version": "89.0.4389.90"},
                "edge_location": "ashburn",
            },
        },
    },
    "conversation_relay_data": {
        "session_id": "VX0000000000000000000000000000001",
        "name": "conversation-relay-event-example-all-in-one",
        "sequence_number": 1,
        "tts_latency": {"latency_ms": 230},
        "stt_latency": {"latency_ms": 150},
        "interrupt": {"type": "DTMF"},
        "last_token_received": {"total_tokens": 128, "total_words": 42},
        "configurations": {
            "configurations": {
                "voice": "3liN8q8YoeB9Hk6AboKe-1.0_0.7_0.8",
                "ttsProvider": "block_elevenlabs",
                "transcriptionProvider": "deepgram",
                "debug": "[SPEAKER_EVENT_REPORT]",
                "speechProvider": "nova-3-general",
                "transcriptionLanguage": "en-US",
                "welcomeGreetingInterruptible": "TRUE",
                "partialPromptOnHangup": "false",
                "interruptible": "TRUE",
                "partialPrompts": "false",
                "interruptOptions": (
                    "InterruptOptions{interruptConfidenceThreshold=0.8, "
                    "ignoreBackchannelForInterrupt=false, interruptCheckThresholdType=by-chars, "
                    "interruptInputLengthThreshold=5}"
                ),
                "preemptible": "FALSE",
                "dtmfDetection": "true",
                "ttsLanguage": "en-US",
                "reportInputDuringAgentSpeech": "NONE",
                "speechTimeout": "0",
            },
            "languages": {
                "es-US": {
                    "tts_provider": "block_elevenlabs",
                    "voice": "94zOad0g7T7K4oa7zhDq-0.9_0.7_0.8",
                    "transcription_provider": "deepgram",
                    "speech_model": "nova-2-general",
                },
                "en-US": {
                    "tts_provider": "block_elevenlabs",
                    "voice": "3liN8q8YoeB9Hk6AboKe-1.0_0.7_0.8",
                    "transcription_provider": "deepgram",
                    "speech_model": "nova-3-general",
                },
            },
        },
        "language_changed": {"tts_language_code": "es-US", "transcription_language_code": "es-US"},
        "call_wrap_up": {"duration_in_seconds": 185, "end_status": "ended"},
        "error": {
            "error_code": 54000,
            "message": "ConversationRelay session encountered an error.",
        },
    },
}

# `data` of the Kinesis quickstart's call-summary.predicted-complete example (CallSummary/1),
# voice-insights-model.md §1.2 and §4.4 [KQS], where it is a JSON string inside the envelope.
KQS_SUMMARY_V1: dict[str, Any] = {
    "call_sid": CALL,
    "account_sid": ACCOUNT,
    "parent_call_sid": "",
    "parent_account_sid": "",
    "start_time": "2020-07-23T22:56:28Z",
    "end_time": "2020-07-23T22:56:33Z",
    "duration": 0,
    "connect_duration": 0,
    "call_type": "client",
    "call_state": "canceled",
    "from": {
        "caller": "+55555555",
        "callee": "",
        "carrier": "MEGA:CORP",
        "connection": "landline",
        "number_prefix": "5555",
        "location": {"lat": 0.0, "lon": -0.0},
        "city": "",
        "country_code": "US",
        "country_subdivision": "",
        "ip_address": "",
        "sdk": None,
    },
    "to": {
        "caller": "",
        "callee": "client:SOMECLIENT",
        "carrier": "",
        "connection": "twilio_sdk",
        "number_prefix": "",
        "location": None,
        "city": "",
        "country_code": "",
        "country_subdivision": "",
        "ip_address": "",
        "sdk": None,
    },
    "processing_state": "partial",
    "processing_version": 1,
    "sip_edge": None,
    "carrier_edge": None,
    "sdk_edge": None,
    "client_edge": None,
    "tags": [],
    "attributes": None,
    "properties": {
        "q850_cause": 0,
        "last_sip_response_num": 0,
        "pdd_ms": 0,
        "route_id": "",
        "media_region": "unknown_realm",
        "signaling_region": "unknown_realm",
        "twilio_media_ip": "",
        "twilio_signaling_ip": "",
        "external_media_ip": "",
        "external_signaling_ip": "",
        "sip_call_id": "",
        "user_agent": "",
        "selected_region": "unknown_realm",
        "region": "unknown_realm",
        "trunk_sid": "",
        "disconnected_by": "unknown_disconnected_by",
        "direction": "outbound_api",
        "settings": None,
    },
}

# `data` of the call-metrics.sdk CallMetric/2 docs example (§3.2 [DOC-MET-SDK]). The reference
# copy is truncated after packet_delay_variation.d70 and its SIDs are placeholders ("CA…"); this
# is the readable part with real-shaped SIDs and the other edges null, as in every example.
DOC_METRIC_V2: dict[str, Any] = {
    "timestamp": "2023-10-05T14:48:00.000Z",
    "call_sid": CALL,
    "account_sid": ACCOUNT,
    "edge": "unknown_edge",
    "direction": "inbound",
    "carrier_edge": {
        "interval": {
            "codec": 0,
            "codec_name": "pcmu",
            "packets_received": 0,
            "packets_sent": 0,
            "packets_lost": 0,
            "packets_loss_percentage": 0.0,
            "jitter": {"min": 0.0, "max": 10.0, "avg": 5.0, "value": 3.0},
            "rtt": {"min": 0.0, "max": 10.0, "avg": 5.0, "value": 3.0},
            "mos": {"min": 0.0, "max": 10.0, "avg": 5.0, "value": 3.0},
            "audio_in": {"min": 0.0, "max": 10.0, "avg": 5.0, "value": 3.0},
            "audio_out": {"min": 0.0, "max": 10.0, "avg": 5.0, "value": 3.0},
            "latency": {"min": 0.0, "max": 10.0, "avg": 5.0, "value": 3.0},
            "bytes_received": 0,
            "bytes_sent": 0,
            "packet_delay_variation": {"d50": 20, "d70": 30},
        },
        "codec_name": "unknown_codec_name",
    },
    "client_edge": None,
    "sip_edge": None,
    "sdk_edge": None,
}

# `data` of the Sink Test event (event-streams-api.md §1.1, from Twilio's Rust blog post).
TEST_SINK_V1: dict[str, Any] = {"test_id": "cae2f9e2-c277-4612-8ad3-93c1a7a3ef88"}


def seed_with_valid_placeholders(edge: str = "carrier_edge") -> dict[str, Any]:
    """The seed example with its docs placeholders (edge, 33-character SIDs) made real.

    We keep ``edge`` a strict enum in every version: the reference says real events use the §2.1
    enum and "ashburn" is a generated placeholder (it is the edge *location* elsewhere in the
    same example), so a free string would only let typos through.
    """
    data = copy.deepcopy(SEED_CALL_EVENT_V3)
    data.update(edge=edge, call_sid=CALL, account_sid=ACCOUNT)
    return data


def strip_line_numbers(listing: str) -> Any:
    """Parses a docs code listing whose line numbers were glued onto the lines ("1{2"a" : 1,3}").

    Line n ends where the number n+1 begins, at an occurrence that leaves line n a well-formed
    pretty-printed JSON line; when a choice leads nowhere the next occurrence is tried, and the
    parse of the rejoined lines is the final judge.
    """
    body = listing[listing.index("1{") :].split("\n", 1)[0]

    def split(pos: int, number: int, done: list[str]) -> list[str] | None:
        if not body.startswith(str(number), pos):
            return None
        start = pos + len(str(number))
        hits = re.finditer(re.escape(str(number + 1)), body[start:])
        for end in [*(start + hit.start() for hit in hits), len(body)]:
            lines = [*done, body[start:end]]
            if _JSON_LINE.fullmatch(lines[-1]) is None:
                continue
            found = _parsed(lines) if end == len(body) else split(end, number + 1, lines)
            if found is not None:
                return found
        return None

    found = split(0, 1, [])
    assert found is not None, "no split of the listing parses as JSON"
    return json.loads("\n".join(found))


def _parsed(lines: list[str]) -> list[str] | None:
    try:
        json.loads("\n".join(lines))
    except ValueError:
        return None
    return lines


_STRING = r'"(?:[^"\\]|\\.)*"'
_NUMBER = r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?"
_JSON_LINE = re.compile(
    rf"\s*(?:{_STRING}\s*:\s*)?(?:{_STRING}|{_NUMBER}|true|false|null|[{{}}\[\]])?\s*,?\s*"
)


def walk(schema: Any, path: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every subschema of a schema document (not data such as defaults), with its path."""
    if not isinstance(schema, dict):
        return
    yield path, schema
    for table in ("properties", "definitions"):
        for name, child in schema.get(table, {}).items():
            yield from walk(child, f"{path}/{table}/{name}")
    for key in ("items", "additionalProperties", "propertyNames"):
        yield from walk(schema.get(key), f"{path}/{key}")
    for key in ("oneOf", "anyOf", "allOf"):
        for index, child in enumerate(schema.get(key, [])):
            yield from walk(child, f"{path}/{key}/{index}")


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def test_packaged_schemas_are_exactly_the_documented_set() -> None:
    assert schema_ids() == sorted(EXPECTED_VERSIONS)
    for schema_id, versions in EXPECTED_VERSIONS.items():
        assert schema_versions(schema_id) == versions


def test_versions_agree_with_the_event_type_catalogue() -> None:
    catalogue = tomllib.loads(files("callstream.model").joinpath("event_types.toml").read_text())
    listed = {sid: entry["versions"] for sid, entry in catalogue["schemas"].items()}
    assert listed == EXPECTED_VERSIONS
    assert {entry["schema_id"] for entry in catalogue["types"]} == set(EXPECTED_VERSIONS)


def test_every_schema_version_has_a_renderer_and_no_renderer_lacks_a_schema() -> None:
    for schema_id in schema_ids():
        assert supported_versions(schema_id) == tuple(schema_versions(schema_id))


@pytest.mark.parametrize(
    ("schema_id", "version"),
    [
        ("VoiceInsights.Nope", 1),
        ("VoiceInsights.CallEvent", 4),
        ("VoiceInsights.CallEvent", 0),
        ("VoiceInsights.CallSummary", 3),
        ("../schemas", 1),
        ("VoiceInsights.CallEvent/..", 1),
        ("", 1),
    ],
)
def test_unknown_schemas_are_refused(schema_id: str, version: int) -> None:
    with pytest.raises(UnknownSchema):
        load_schema(schema_id, version)


def test_unknown_schema_id_has_no_versions() -> None:
    with pytest.raises(UnknownSchema):
        schema_versions("EventStreams.Nope")


def test_callers_cannot_change_what_the_next_caller_loads() -> None:
    first = load_schema("VoiceInsights.CallEvent", 3)
    first["properties"].clear()
    assert load_schema("VoiceInsights.CallEvent", 3)["properties"]


# ---------------------------------------------------------------------------------------------
# Well-formed and strict
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("schema_id", "version"), ALL_SCHEMAS)
def test_schema_is_valid_draft07(schema_id: str, version: int) -> None:
    document = load_schema(schema_id, version)
    assert document["$schema"] == "http://json-schema.org/draft-07/schema#"
    Draft7Validator.check_schema(document)
    assert document["title"] == f"{schema_id} v{version}"


@pytest.mark.parametrize(("schema_id", "version"), ALL_SCHEMAS)
def test_root_and_every_definition_reject_unknown_members(schema_id: str, version: int) -> None:
    document = load_schema(schema_id, version)
    assert document["additionalProperties"] is False
    for name, definition in document.get("definitions", {}).items():
        assert definition.get("additionalProperties") is False, name


@pytest.mark.parametrize(("schema_id", "version"), ALL_SCHEMAS)
def test_no_object_anywhere_is_open(schema_id: str, version: int) -> None:
    # Records are closed; the few maps (counts by level, provider settings, ...) constrain their
    # values with a schema, so nothing is ever "any member goes".
    for path, node in walk(load_schema(schema_id, version)):
        if node.get("type") != "object":
            continue
        closed = node.get("additionalProperties")
        if "properties" in node:
            assert closed is False, path
        else:
            assert isinstance(closed, dict) and closed, path


@pytest.mark.parametrize(("schema_id", "version"), ALL_SCHEMAS)
def test_refs_resolve_and_every_definition_is_used(schema_id: str, version: int) -> None:
    document = load_schema(schema_id, version)
    definitions = set(document.get("definitions", {}))
    refs = {node["$ref"] for _, node in walk(document) if "$ref" in node}
    assert {ref.removeprefix("#/definitions/") for ref in refs} == definitions
    assert all(ref.startswith("#/definitions/") for ref in refs)


@pytest.mark.parametrize(("schema_id", "version"), ALL_SCHEMAS)
def test_required_members_are_declared(schema_id: str, version: int) -> None:
    for path, node in walk(load_schema(schema_id, version)):
        if "required" in node:
            assert set(node["required"]) <= set(node["properties"]), path
            assert len(set(node["required"])) == len(node["required"]), path


@pytest.mark.parametrize(("schema_id", "version"), VOICE_INSIGHTS_SCHEMAS)
def test_defaults_are_valid_values_of_their_member(schema_id: str, version: int) -> None:
    document = load_schema(schema_id, version)
    definitions = document.get("definitions", {})
    defaults = [(path, node) for path, node in walk(document) if "default" in node]
    assert defaults
    for path, node in defaults:
        member = {"definitions": definitions, **node}
        assert Draft7Validator(member).is_valid(node["default"]), path


@pytest.mark.parametrize(("schema_id", "version"), ALL_SCHEMAS)
def test_required_scalars_with_a_default_are_what_renderers_fall_back_to(
    schema_id: str, version: int
) -> None:
    # docs/event-schemas.md promises that an unknown scalar is rendered as its schema default,
    # so every required scalar must have one unless it is an identity or enum the model requires.
    no_default_allowed = {
        "timestamp", "call_sid", "account_sid", "edge", "name", "group", "direction",
        "call_type", "call_state", "processing_state", "processing_version", "start_time",
        "end_time", "created_time", "test_id", "lat", "lon", "type",
    }  # fmt: skip
    for path, node in walk(load_schema(schema_id, version)):
        if "properties" not in node:
            continue
        for member in node.get("required", []):
            spec = node["properties"][member]
            scalar = spec.get("type") in ("string", "integer", "number", "boolean")
            if scalar and member not in no_default_allowed:
                assert "default" in spec, f"{path}/properties/{member}"


def test_format_checks_are_on() -> None:
    data = seed_with_valid_placeholders()
    data["timestamp"] = "2021-13-45T14:15:22Z"
    assert errors("VoiceInsights.CallEvent", 3, data) == [
        "timestamp: '2021-13-45T14:15:22Z' is not a 'date-time'"
    ]


# ---------------------------------------------------------------------------------------------
# The gateway call event example (seed 000), CallEvent/3
# ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not SEED_FILE.exists(), reason="reference seeds are not mounted")
def test_embedded_seed_matches_reference() -> None:
    envelope = strip_line_numbers(SEED_FILE.read_text())
    assert envelope["dataschema"] == "https://events-schemas.twilio.com/VoiceInsights.CallEvent/3"
    assert json.dumps(envelope["data"]) == json.dumps(SEED_CALL_EVENT_V3)


def test_line_number_stripper_handles_numbers_that_look_like_line_numbers() -> None:
    # Line 3 is the number 34 and line 4 starts with "4": the first "4" is not a line break.
    assert strip_line_numbers('1{2"a" : [334,4"b"5],6"c" : 17}') == {"a": [34, "b"], "c": 1}


def test_seed_placeholders_are_exactly_what_fails() -> None:
    failures = errors("VoiceInsights.CallEvent", 3, SEED_CALL_EVENT_V3)
    assert sorted(failure.split(":")[0] for failure in failures) == [
        "account_sid",
        "call_sid",
        "edge",
    ]


@pytest.mark.parametrize("edge", ["carrier_edge", "sip_edge", "client_edge", "sdk_edge"])
def test_seed_validates_with_placeholders_replaced(edge: str) -> None:
    assert errors("VoiceInsights.CallEvent", 3, seed_with_valid_placeholders(edge)) == []


def test_seed_edge_placeholder_is_not_accepted_as_a_free_string() -> None:
    data = seed_with_valid_placeholders()
    data["edge"] = "ashburn"
    assert [e.split(":")[0] for e in errors("VoiceInsights.CallEvent", 3, data)] == ["edge"]


def test_seed_without_conversation_relay_is_a_v2_event_and_not_a_v3_one() -> None:
    v2 = seed_with_valid_placeholders()
    del v2["conversation_relay_data"]
    assert errors("VoiceInsights.CallEvent", 2, v2) == []
    assert errors("VoiceInsights.CallEvent", 3, v2) == [
        ": 'conversation_relay_data' is a required property"
    ]
    v2_with_relay = seed_with_valid_placeholders()
    assert errors("VoiceInsights.CallEvent", 2, v2_with_relay) == [
        ": Additional properties are not allowed ('conversation_relay_data' was unexpected)"
    ]


def test_seed_without_edge_location_is_a_v1_event() -> None:
    v1 = seed_with_valid_placeholders("sdk_edge")
    del v1["conversation_relay_data"]
    assert errors("VoiceInsights.CallEvent", 1, v1) != []
    for edge in ("carrier_edge", "client_edge", "sip_edge"):
        del v1[edge]["metadata"]["edge_location"]
    del v1["sdk_edge"]["metadata"]["sdk"]["edge_location"]
    assert errors("VoiceInsights.CallEvent", 1, v1) == []


@pytest.mark.parametrize(
    "path",
    [
        (),
        ("sdk_edge",),
        ("sdk_edge", "metadata", "sdk", "browser"),
        ("carrier_edge", "metadata"),
        ("conversation_relay_data", "call_wrap_up"),
    ],
)
def test_unknown_members_are_rejected_at_every_depth(path: tuple[str, ...]) -> None:
    data = seed_with_valid_placeholders()
    target = data
    for key in path:
        target = target[key]
    target["surprise"] = 1
    failures = errors("VoiceInsights.CallEvent", 3, data)
    assert failures and all("'surprise' was unexpected" in failure for failure in failures)


def _seed_relay() -> m.ConversationRelayData:
    return msgspec.convert(SEED_CALL_EVENT_V3["conversation_relay_data"], m.ConversationRelayData)


def test_rendering_the_seed_gateway_event_reproduces_it() -> None:
    event = m.CallEvent(
        account_sid=ACCOUNT,
        call_sid=CALL,
        time=datetime(2021, 5, 24, 14, 15, 22, tzinfo=UTC),
        seq=0,
        edge="carrier_edge",
        group="call",
        name="call.connected",
        level="UNKNOWN",
        gateway=msgspec.convert(SEED_CALL_EVENT_V3["carrier_edge"], m.GatewayEventData),
        conversation_relay=_seed_relay(),
    )
    data = render(event, 3)
    expected = seed_with_valid_placeholders("carrier_edge")
    expected.update(timestamp="2021-05-24T14:15:22.000Z", client_edge=None, sip_edge=None)
    expected["sdk_edge"] = None
    # Byte-for-byte, so member order matches Twilio's too.
    assert json.dumps(data) == json.dumps(expected)


def test_rendering_the_seed_sdk_event_reproduces_its_sdk_edge() -> None:
    event = m.CallEvent(
        account_sid=ACCOUNT,
        call_sid=CALL,
        time=datetime(2021, 5, 24, 14, 15, 22, tzinfo=UTC),
        seq=0,
        edge="sdk_edge",
        group="call",
        name="call.connected",
        sdk=msgspec.convert(SEED_CALL_EVENT_V3["sdk_edge"], m.SdkEventData),
    )
    data = render(event, 3)
    assert json.dumps(data["sdk_edge"]) == json.dumps(SEED_CALL_EVENT_V3["sdk_edge"])
    assert data["conversation_relay_data"] is None
    assert errors("VoiceInsights.CallEvent", 3, data) == []


# ---------------------------------------------------------------------------------------------
# The Kinesis quickstart summary (CallSummary/1)
# ---------------------------------------------------------------------------------------------


def kqs_canonical() -> m.CallSummary:
    """The KQS example as the engine would hold it: every "" / 0 / unknown_* is simply unknown."""
    return m.CallSummary(
        account_sid=ACCOUNT,
        call_sid=CALL,
        time=datetime(2020, 7, 23, 22, 56, 33, tzinfo=UTC),
        kind="predicted-complete",
        processing_state="partial",
        processing_version=1,
        call_type="client",
        call_state="canceled",
        start_time=datetime(2020, 7, 23, 22, 56, 28, tzinfo=UTC),
        end_time=datetime(2020, 7, 23, 22, 56, 33, tzinfo=UTC),
        duration=0,
        connect_duration=0,
        from_=m.CallParty(
            caller="+55555555",
            carrier="MEGA:CORP",
            connection="landline",
            number_prefix="5555",
            location=m.Location(lat=0.0, lon=-0.0),
            country_code="US",
        ),
        to=m.CallParty(callee="client:SOMECLIENT", connection="twilio_sdk"),
        properties=m.SummaryProperties(direction="outbound_api"),
    )


def test_kqs_summary_validates_as_published() -> None:
    assert errors("VoiceInsights.CallSummary", 1, KQS_SUMMARY_V1) == []


def test_rendering_the_kqs_summary_reproduces_it() -> None:
    assert json.dumps(render(kqs_canonical(), 1)) == json.dumps(KQS_SUMMARY_V1)


@pytest.mark.parametrize("path", [(), ("from",), ("properties",)])
def test_kqs_summary_with_an_unknown_member_is_rejected(path: tuple[str, ...]) -> None:
    data = copy.deepcopy(KQS_SUMMARY_V1)
    target = data
    for key in path:
        target = target[key]
    target["surprise"] = 1
    assert errors("VoiceInsights.CallSummary", 1, data) == [
        f"{'/'.join(path)}: Additional properties are not allowed ('surprise' was unexpected)"
    ]


def test_kqs_summary_is_not_a_v2_summary() -> None:
    # v2 reshaped properties and added created_time and trust (§4.4), so v1 data must not pass.
    failures = errors("VoiceInsights.CallSummary", 2, KQS_SUMMARY_V1)
    assert ": 'created_time' is a required property" in failures
    assert ": 'trust' is a required property" in failures
    assert any(f.startswith("properties: Additional properties") for f in failures)


# ---------------------------------------------------------------------------------------------
# The CallMetric/2 docs example and the test event
# ---------------------------------------------------------------------------------------------


def test_docs_metric_example_validates() -> None:
    assert errors("VoiceInsights.CallMetric", 2, DOC_METRIC_V2) == []


def test_metric_stats_must_say_something() -> None:
    data = copy.deepcopy(DOC_METRIC_V2)
    data["carrier_edge"]["interval"]["rtt"] = {}
    assert errors("VoiceInsights.CallMetric", 2, data) == [
        "carrier_edge/interval/rtt: {} should be non-empty"
    ]


def test_packet_delay_variation_keys_are_percentiles() -> None:
    data = copy.deepcopy(DOC_METRIC_V2)
    data["carrier_edge"]["interval"]["packet_delay_variation"] = {"p50": 1}
    assert errors("VoiceInsights.CallMetric", 2, data) == [
        "carrier_edge/interval/packet_delay_variation: 'p50' does not match '^d[0-9]+$'"
    ]


def test_sink_test_example_validates_and_renders() -> None:
    assert errors("EventStreams.TestSink", 1, TEST_SINK_V1) == []
    event = m.TestEvent(
        account_sid=ACCOUNT,
        sink_sid="DG" + "1" * 32,
        test_id=TEST_SINK_V1["test_id"],
        time=datetime(2026, 6, 10, 6, 2, 54, 377000, tzinfo=UTC),
    )
    assert render(event, 1) == TEST_SINK_V1
    assert errors("EventStreams.TestSink", 1, {"test_id": "x", "more": 1}) == [
        ": Additional properties are not allowed ('more' was unexpected)",
        "test_id: 'x' does not match "
        "'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'",
    ]


# ---------------------------------------------------------------------------------------------
# Version differences, as documents (docs/event-schemas.md "Versions")
# ---------------------------------------------------------------------------------------------


def _without(document: dict[str, Any], definition: str, *members: str) -> None:
    node = document["definitions"][definition]
    for member in members:
        del node["properties"][member]
        if member in node["required"]:
            node["required"].remove(member)


def _comparable(document: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in document.items() if key != "title"}


@pytest.mark.parametrize("schema_id", ["VoiceInsights.CallEvent", "VoiceInsights.CallMetric"])
def test_v2_is_v1_plus_edge_location(schema_id: str) -> None:
    v2 = load_schema(schema_id, 2)
    _without(v2, "GatewayMetadata", "edge_location")
    _without(v2, "TwilioSDK", "edge_location")
    assert _comparable(v2) == _comparable(load_schema(schema_id, 1))


def test_call_event_v3_is_v2_plus_conversation_relay() -> None:
    v3 = load_schema("VoiceInsights.CallEvent", 3)
    v2 = load_schema("VoiceInsights.CallEvent", 2)
    del v3["properties"]["conversation_relay_data"]
    v3["required"].remove("conversation_relay_data")
    added = set(v3["definitions"]) - set(v2["definitions"])
    assert added == {
        "CallWrapUpEvent",
        "ConfigurationEvent",
        "ConversationRelayData",
        "ConversationRelayErrorEvent",
        "InterruptEvent",
        "LanguageChangedEvent",
        "LanguageSettings",
        "LastTokenReceivedEvent",
        "LatencyEvent",
    }
    for name in added:
        del v3["definitions"][name]
    assert _comparable(v3) == _comparable(v2)


def test_call_wrap_up_matches_the_readable_part_of_twilios_v3_schema() -> None:
    # §2.3: both members required, duration_in_seconds integer default 0, end_status default
    # "unknown".
    wrap_up = load_schema("VoiceInsights.CallEvent", 3)["definitions"]["CallWrapUpEvent"]
    assert wrap_up["required"] == ["duration_in_seconds", "end_status"]
    assert wrap_up["properties"]["duration_in_seconds"] == {"type": "integer", "default": 0}
    assert wrap_up["properties"]["end_status"]["default"] == "unknown"


@pytest.mark.parametrize(("schema_id", "version"), VOICE_INSIGHTS_SCHEMAS)
def test_confirmed_fragments_hold_wherever_the_definition_exists(
    schema_id: str, version: int
) -> None:
    definitions = load_schema(schema_id, version)["definitions"]
    browser = definitions["Browser"]
    assert browser["required"] == ["name", "major", "version"]
    assert all(p == {"type": "string", "default": ""} for p in browser["properties"].values())
    if "ClientMetadata" in definitions:
        # CallMetric/2 fragment (§3.2): exactly these five are required; location, sdk are not.
        assert definitions["ClientMetadata"]["required"] == [
            "client_name",
            "city",
            "country_code",
            "country_subdivision",
            "ip_address",
        ]
    if "ClientMetrics" in definitions:
        client_metrics = definitions["ClientMetrics"]
        assert client_metrics["required"] == ["codec_name"]
        assert client_metrics["properties"]["codec_name"]["default"] == "unknown_codec_name"
        assert client_metrics["properties"]["codec"]["format"] == "int32"


def test_call_summary_v2_differs_from_v1_exactly_as_documented() -> None:
    v1 = load_schema("VoiceInsights.CallSummary", 1)
    v2 = load_schema("VoiceInsights.CallSummary", 2)
    assert list(v1["properties"]) == list(KQS_SUMMARY_V1)
    assert set(v2["properties"]) - set(v1["properties"]) == {"created_time", "trust"}
    assert set(v1["properties"]) <= set(v2["properties"])
    assert set(v2["definitions"]) - set(v1["definitions"]) == {
        "AppInfo",
        "BrandedCall",
        "Trust",
        "VerifiedCaller",
    }
    assert list(v2["definitions"]["CallProperties"]["properties"]) == [
        "direction",
        "disconnected_by",
        "last_sip_response_num",
        "pdd_ms",
        "queue_time",
    ]
    assert list(v1["definitions"]["CallProperties"]["properties"]) == list(
        KQS_SUMMARY_V1["properties"]
    )
    edge_v1 = v1["definitions"]["EdgeProperties"]["properties"]
    edge_v2 = v2["definitions"]["EdgeProperties"]["properties"]
    assert set(edge_v2) - set(edge_v1) == {"edge_location"}
    sdk_v1 = v1["definitions"]["TwilioSDK"]["properties"]
    sdk_v2 = v2["definitions"]["TwilioSDK"]["properties"]
    assert set(sdk_v2) - set(sdk_v1) == {"edge_location", "app"}
