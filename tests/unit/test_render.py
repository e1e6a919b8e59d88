"""Renderers: every canonical event renders, in every version, to data its schema accepts; REST
examples survive the trip through the canonical model; unknowns become the schema's defaults; and
the canonical model keeps the promises the envelope code relies on.
"""

import copy
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft7Validator

from callstream.model import insights as m
from callstream.schemas import load_schema
from callstream.schemas.render import UnsupportedSchemaVersion, render, supported_versions
from tests.unit.strategies_insights import (
    call_events,
    call_metrics,
    call_summaries,
    errors,
    insight_events,
    leaf_errors,
    sink_test_events,
)

ACCOUNT = "AC998c10b68cbfda9f67277f7d8f4439c9"
CALL = "CA03a02b156c6faa96c86906f7e9ad0f38"
T0 = datetime(2020, 1, 6, 15, 21, 48, 6000, tzinfo=UTC)

# Validity against the schema is the property that matters most; the others get fewer examples.
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
AUXILIARY = settings(PROPERTY, max_examples=50)

# ---------------------------------------------------------------------------------------------
# REST examples from voice-insights-model.md. The REST API omits members whose value is unknown
# or absent, while every stream schema requires them (docs/event-schemas.md), so a REST body is
# not a valid stream body. Each example is therefore (1) shown to differ from the stream shape
# *only* by missing members, then (2) converted to the canonical model and rendered, and the
# rendering is validated and shown to carry every member of the example unchanged.
# ---------------------------------------------------------------------------------------------

# §2.2 [CONFIRMED PY test_event.py]
REST_SDK_ERROR_EVENT: dict[str, Any] = {
    "timestamp": "2019-09-19T22:15:23Z",
    "call_sid": "CA03a02b156c6faa96c86906f7e9ad0f38",
    "account_sid": "AC998c10b68cbfda9f67277f7d8f4439c9",
    "edge": "sdk_edge",
    "group": "connection",
    "name": "error",
    "level": "ERROR",
    "sdk_edge": {
        "error": {"code": 31600},
        "metadata": {
            "client_name": "GTI9300323095d271b890c91568931321395",
            "location": {"lat": 37.4192, "lon": -122.0574},
            "city": "Mountain View",
            "country_code": "US",
            "country_subdivision": "California",
            "ip_address": "108.177.7.83",
            "sdk": {
                "type": "twilio-voice-android",
                "version": "4.5.1",
                "platform": "android",
                "selected_region": "gll",
                "os": {"name": "android", "version": "4.3"},
                "device": {
                    "model": "GT-I9300",
                    "type": "GT-I9300",
                    "vendor": "samsung",
                    "arch": "armeabi-v7a",
                },
            },
        },
    },
    "client_edge": None,
    "carrier_edge": None,
    "sip_edge": None,
}

# §2.2 [3P KB responses_test.go]; its SIDs are elided in the reference ("AC…"), so real-shaped
# ones stand in.
REST_CLIENT_EDGE_EVENT: dict[str, Any] = {
    "group": "connection",
    "name": "completed",
    "level": "INFO",
    "timestamp": "2020-01-02T22:18:36.028Z",
    "client_edge": {"metadata": {"region": "us1"}},
    "edge": "client_edge",
    "account_sid": ACCOUNT,
    "call_sid": CALL,
    "sdk_edge": None,
    "sip_edge": None,
    "carrier_edge": None,
}

# §3.2 [CONFIRMED PY test_metric.py]
REST_SDK_METRIC: dict[str, Any] = {
    "timestamp": "2019-10-07T22:32:06Z",
    "call_sid": "CA7569efe0253644fa4a88aa97beca3310",
    "account_sid": "AC998c10b68cbfda9f67277f7d8f4439c9",
    "edge": "sdk_edge",
    "direction": "both",
    "sdk_edge": {
        "interval": {
            "packets_received": 50,
            "packets_lost": 0,
            "audio_in": {"value": 81.0},
            "audio_out": {"value": 5237.0},
            "jitter": {"value": 9},
            "mos": {"value": 4.39},
            "rtt": {"value": 81},
        },
        "cumulative": {
            "bytes_received": 547788,
            "bytes_sent": 329425,
            "packets_received": 3900,
            "packets_lost": 0,
            "packets_sent": 3934,
        },
    },
    "client_edge": None,
    "carrier_edge": None,
    "sip_edge": None,
}

# §3.2 [3P KB]: the reference shows these records without SIDs.
REST_GATEWAY_METRICS: list[dict[str, Any]] = [
    {
        "direction": "outbound",
        "edge": "carrier_edge",
        "timestamp": "2020-01-06T15:21:48.006Z",
        "carrier_edge": {
            "cumulative": {
                "packets_lost": 0,
                "packets_sent": 477,
                "jitter": {"max": 0.122655, "avg": 0.0292324},
            },
            "codec": 0,
            "codec_name": "pcmu",
            "metadata": {"region": "us1"},
        },
    },
    {
        "direction": "inbound",
        "edge": "carrier_edge",
        "timestamp": "2020-01-06T15:21:57.017Z",
        "carrier_edge": {
            "cumulative": {
                "jitter": {"max": 0.0134316, "avg": 0.00555087},
                "packets_received": 978,
                "packets_lost": 0,
            },
            "codec": 0,
            "codec_name": "pcmu",
            "metadata": {"region": "us1"},
        },
    },
]

# §4.2 summary samples: a gateway edge [CONFIRMED PY] and an SDK edge [3P KB].
REST_SUMMARY_CARRIER_EDGE: dict[str, Any] = {
    "properties": {
        "media_region": "us1",
        "signaling_region": "us1",
        "edge_location": "xxxxx",
        "direction": "inbound",
    },
    "metrics": {
        "inbound": {
            "codec": 0,
            "codec_name": "pcmu",
            "packets_received": 202,
            "packets_lost": 0,
            "packets_loss_percentage": 0.0,
            "jitter": {"max": 1.48209, "avg": 0.483035},
        },
        "outbound": {
            "codec": 0,
            "codec_name": "pcmu",
            "packets_sent": 218,
            "packets_lost": 0,
            "packets_loss_percentage": 0.0,
            "jitter": {"max": 0.51868, "avg": 0.364434},
            "packet_delay_variation": {"d50": 1},
        },
    },
}
REST_SUMMARY_SDK_EDGE: dict[str, Any] = {
    "metrics": {
        "inbound": {
            "audio_out": {"max": 5611.0, "avg": 89.2},
            "jitter": {"max": 3.0, "avg": 0.17},
            "packets_loss_percentage": 0.010012015,
            "mos": {"max": 4.43, "avg": 4.43, "min": 4.33},
            "packets_received": 9987,
            "rtt": {"max": 98.0, "avg": 85.8, "min": 80.0},
            "audio_in": {"max": 11268.0, "avg": 1881.28},
            "packets_lost": 1,
        },
        "outbound": {"codec": 111, "packets_sent": 9997, "codec_name": "opus"},
    },
    "properties": {
        "direction": "outbound",
        "disconnected_by": "remote",
        "settings": {"dscp": True, "ice_restart_enabled": True},
    },
    "events": {
        "levels": {"INFO": 13, "DEBUG": 6},
        "groups": {
            "get_user_media": 1,
            "signaling_state": 3,
            "ice_gathering_state": 2,
            "connection": 4,
            "ice_connection_state": 1,
            "network_information": 8,
        },
    },
}


def added_members(rest: Any, rendered: Any, path: str = "") -> dict[str, Any]:
    """What ``rendered`` has beyond ``rest``; fails if it lacks or changes anything ``rest`` has."""
    if not isinstance(rest, dict):
        assert rendered == rest, f"{path}: {rendered!r} != {rest!r}"
        return {}
    assert isinstance(rendered, dict), f"{path}: {rendered!r} is not an object"
    missing = set(rest) - set(rendered)
    assert not missing, f"{path}: rendering lost {sorted(missing)}"
    added = {f"{path}/{key}": rendered[key] for key in rendered.keys() - rest.keys()}
    for key, value in rest.items():
        added |= added_members(value, rendered[key], f"{path}/{key}")
    return added


def missing_members_only(schema_id: str, version: int, data: Any, ref: str | None = None) -> None:
    """Asserts that ``data`` fails the schema (or a definition of it) only for absent members."""
    document = load_schema(schema_id, version)
    if ref is not None:
        document = {"definitions": document["definitions"], "$ref": f"#/definitions/{ref}"}
    found = [e.message for e in leaf_errors(Draft7Validator(document), data)]
    assert found, "the REST shape was expected to lack required members"
    assert all(message.endswith("is a required property") for message in found), found


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def event_from_rest(rest: dict[str, Any]) -> m.CallEvent:
    edge = rest["edge"]
    payload = rest[edge]
    return m.CallEvent(
        account_sid=rest["account_sid"],
        call_sid=rest["call_sid"],
        time=parse_time(rest["timestamp"]),
        seq=0,
        edge=edge,
        group=rest["group"],
        name=rest["name"],
        level=rest["level"],
        gateway=msgspec.convert(payload, m.GatewayEventData) if edge != "sdk_edge" else None,
        sdk=msgspec.convert(payload, m.SdkEventData) if edge == "sdk_edge" else None,
    )


def metric_from_rest(rest: dict[str, Any]) -> m.CallMetric:
    edge = rest["edge"]
    payload = rest[edge]
    end = parse_time(rest["timestamp"])

    def optional(name: str, kind: type[Any]) -> Any:
        return None if name not in payload else msgspec.convert(payload[name], kind)

    return m.CallMetric(
        account_sid=rest.get("account_sid", ACCOUNT),
        call_sid=rest.get("call_sid", CALL),
        time=end,
        window_start=end - timedelta(seconds=10),
        edge=edge,
        direction=rest["direction"],
        codec=payload.get("codec"),
        codec_name=payload.get("codec_name"),
        interval=optional("interval", m.Metrics),
        cumulative=optional("cumulative", m.Metrics),
        gateway_metadata=optional("metadata", m.GatewayMetadata) if edge != "sdk_edge" else None,
        client_metadata=optional("metadata", m.ClientMetadata) if edge == "sdk_edge" else None,
    )


def summary_with_edges(**edges: Any) -> m.CallSummary:
    return m.CallSummary(
        account_sid=ACCOUNT,
        call_sid=CALL,
        time=T0,
        kind="complete",
        processing_state="complete",
        processing_version=3,
        call_type="client",
        call_state="completed",
        **edges,
    )


@pytest.mark.parametrize("version", [1, 2])
def test_rest_sdk_error_event_differs_from_the_stream_only_by_missing_members(
    version: int,
) -> None:
    missing_members_only("VoiceInsights.CallEvent", version, REST_SDK_ERROR_EVENT)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_rest_sdk_error_event_renders_to_a_valid_event_that_keeps_every_member(
    version: int,
) -> None:
    data = render(event_from_rest(REST_SDK_ERROR_EVENT), version)
    assert errors("VoiceInsights.CallEvent", version, data) == []
    rest = {k: v for k, v in REST_SDK_ERROR_EVENT.items() if k != "timestamp"}
    added = added_members(rest, data)
    assert data["timestamp"] == "2019-09-19T22:15:23.000Z"
    expected: dict[str, Any] = {
        "/timestamp": "2019-09-19T22:15:23.000Z",
        "/sdk_edge/error/message": "",
        "/sdk_edge/metadata/sdk/region": "",
    }
    if version >= 2:
        expected["/sdk_edge/metadata/sdk/edge_location"] = ""
    if version >= 3:
        expected["/conversation_relay_data"] = None
    assert added == expected


@pytest.mark.parametrize("version", [1, 2, 3])
def test_rest_gateway_event_renders_with_metadata_defaults(version: int) -> None:
    data = render(event_from_rest(REST_CLIENT_EDGE_EVENT), version)
    assert errors("VoiceInsights.CallEvent", version, data) == []
    added = added_members(REST_CLIENT_EDGE_EVENT, data)
    expected: dict[str, Any] = {
        "/client_edge/metadata/twilio_ip": "",
        "/client_edge/metadata/external_ip": "",
    }
    if version >= 2:
        expected["/client_edge/metadata/edge_location"] = ""
    if version >= 3:
        expected["/conversation_relay_data"] = None
    assert added == expected


@pytest.mark.parametrize("version", [1, 2])
def test_rest_sdk_metric_renders_with_only_the_codec_name_default_added(version: int) -> None:
    missing_members_only("VoiceInsights.CallMetric", version, REST_SDK_METRIC)
    data = render(metric_from_rest(REST_SDK_METRIC), version)
    assert errors("VoiceInsights.CallMetric", version, data) == []
    rest = {k: v for k, v in REST_SDK_METRIC.items() if k != "timestamp"}
    assert added_members(rest, data) == {
        "/timestamp": "2019-10-07T22:32:06.000Z",
        "/sdk_edge/codec_name": "unknown_codec_name",
    }


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("rest", REST_GATEWAY_METRICS, ids=["outbound", "inbound"])
def test_rest_gateway_metrics_render_with_sids_and_metadata_defaults(
    rest: dict[str, Any], version: int
) -> None:
    missing_members_only("VoiceInsights.CallMetric", version, rest)
    data = render(metric_from_rest(rest), version)
    assert errors("VoiceInsights.CallMetric", version, data) == []
    expected = {
        "/call_sid": CALL,
        "/account_sid": ACCOUNT,
        "/client_edge": None,
        "/sip_edge": None,
        "/sdk_edge": None,
        "/carrier_edge/metadata/twilio_ip": "",
        "/carrier_edge/metadata/external_ip": "",
    }
    if version >= 2:
        expected["/carrier_edge/metadata/edge_location"] = ""
    assert added_members(rest, data) == expected


def carrier_edge_from_rest() -> m.GatewayEdgeSummary:
    metrics = REST_SUMMARY_CARRIER_EDGE["metrics"]
    return m.GatewayEdgeSummary(
        properties=msgspec.convert(REST_SUMMARY_CARRIER_EDGE["properties"], m.EdgeProperties),
        inbound=msgspec.convert(metrics["inbound"], m.Metrics),
        outbound=msgspec.convert(metrics["outbound"], m.Metrics),
    )


def sdk_edge_from_rest() -> m.SdkEdgeSummary:
    metrics = REST_SUMMARY_SDK_EDGE["metrics"]
    return m.SdkEdgeSummary(
        properties=msgspec.convert(REST_SUMMARY_SDK_EDGE["properties"], m.SdkEdgeProperties),
        inbound=msgspec.convert(metrics["inbound"], m.Metrics),
        outbound=msgspec.convert(metrics["outbound"], m.Metrics),
        events=msgspec.convert(REST_SUMMARY_SDK_EDGE["events"], m.SdkEventCounts),
    )


def test_rest_summary_edges_differ_from_the_stream_only_by_missing_members() -> None:
    summary = "VoiceInsights.CallSummary"
    missing_members_only(summary, 2, REST_SUMMARY_CARRIER_EDGE, ref="GatewayEdgeSummary")
    missing_members_only(summary, 2, REST_SUMMARY_SDK_EDGE, ref="SdkEdgeSummary")


@pytest.mark.parametrize("version", [1, 2])
def test_rest_summary_edges_render_inside_a_valid_summary(version: int) -> None:
    summary = summary_with_edges(
        carrier_edge=carrier_edge_from_rest(), sdk_edge=sdk_edge_from_rest()
    )
    data = render(summary, version)
    assert errors("VoiceInsights.CallSummary", version, data) == []

    carrier = copy.deepcopy(REST_SUMMARY_CARRIER_EDGE)
    if version == 1:
        # edge_location arrived with v2 (CL-2020-11, CL-2022-02); v1 cannot carry it.
        del carrier["properties"]["edge_location"]
    carrier_added = added_members(carrier, data["carrier_edge"])
    assert set(carrier_added) == {
        f"/properties/{name}"
        for name in (
            "twilio_media_ip", "twilio_signaling_ip", "external_media_ip",
            "external_signaling_ip", "sip_call_id", "user_agent", "selected_region", "region",
            "disconnected_by", "trunk_sid",
        )
    }  # fmt: skip
    assert carrier_added["/properties/region"] == "unknown_realm"

    sdk_added = added_members(REST_SUMMARY_SDK_EDGE, data["sdk_edge"])
    assert sdk_added == {
        "/properties/settings/edge": "",
        "/properties/settings/selected_edges": [],
        "/events/errors": {},
        "/events/feedback": None,
    }


# ---------------------------------------------------------------------------------------------
# Every canonical event renders valid data in every version
# ---------------------------------------------------------------------------------------------


@PROPERTY
@pytest.mark.parametrize("version", [1, 2, 3])
@given(event=call_events())
def test_call_events_render_valid_data(version: int, event: m.CallEvent) -> None:
    assert errors(event.schema_id, version, render(event, version)) == []


@PROPERTY
@pytest.mark.parametrize("version", [1, 2])
@given(metric=call_metrics())
def test_call_metrics_render_valid_data(version: int, metric: m.CallMetric) -> None:
    assert errors(metric.schema_id, version, render(metric, version)) == []


@PROPERTY
@pytest.mark.parametrize("version", [1, 2])
@given(summary=call_summaries())
def test_call_summaries_render_valid_data(version: int, summary: m.CallSummary) -> None:
    assert errors(summary.schema_id, version, render(summary, version)) == []


@PROPERTY
@given(event=sink_test_events())
def test_sink_test_events_render_valid_data(event: m.TestEvent) -> None:
    assert (
        errors(event.schema_id, 1, render(event, 1))
        == []
        == errors(event.schema_id, 1, {"test_id": event.test_id})
    )


@AUXILIARY
@given(event=insight_events(), data=st.data())
def test_renderings_are_plain_json(event: m.InsightEvent, data: st.DataObject) -> None:
    version = data.draw(st.sampled_from(supported_versions(event.schema_id)))
    rendered = render(event, version)
    assert json.loads(json.dumps(rendered, allow_nan=False)) == rendered


@AUXILIARY
@given(event=insight_events())
def test_canonical_events_survive_the_events_log(event: m.InsightEvent) -> None:
    encoded = msgspec.json.encode(event)
    assert msgspec.json.decode(encoded, type=type(event)) == event


@AUXILIARY
@given(event=st.one_of(call_events(), call_metrics()), data=st.data())
def test_only_the_reporting_edge_has_an_object(
    event: m.CallEvent | m.CallMetric, data: st.DataObject
) -> None:
    version = data.draw(st.sampled_from(supported_versions(event.schema_id)))
    rendered = render(event, version)
    populated = {edge for edge in m.EDGES[1:] if rendered[edge] is not None}
    assert populated == ({event.edge} - {"unknown_edge"})


def without_key(node: Any, key: str) -> Any:
    if isinstance(node, dict):
        return {k: without_key(v, key) for k, v in node.items() if k != key}
    if isinstance(node, list):
        return [without_key(item, key) for item in node]
    return node


@AUXILIARY
@given(event=st.one_of(call_events(), call_metrics()))
def test_v1_is_v2_without_edge_location(event: m.CallEvent | m.CallMetric) -> None:
    assert without_key(render(event, 2), "edge_location") == render(event, 1)


@AUXILIARY
@given(event=call_events())
def test_call_event_v3_is_v2_plus_conversation_relay(event: m.CallEvent) -> None:
    v3 = render(event, 3)
    relay = v3.pop("conversation_relay_data")
    assert v3 == render(event, 2)
    assert (relay is None) == (event.conversation_relay is None)


@AUXILIARY
@given(summary=call_summaries())
def test_summary_versions_agree_on_what_they_share(summary: m.CallSummary) -> None:
    v1, v2 = render(summary, 1), render(summary, 2)
    assert set(v2) - set(v1) == {"created_time", "trust"}
    comparable = set(v1) - {"properties"}
    v2_as_v1 = without_key(without_key(v2, "edge_location"), "app")
    assert {k: v2_as_v1[k] for k in comparable} == {k: v1[k] for k in comparable}
    shared = v2["properties"].keys() - {"queue_time"}
    assert {k: v2["properties"][k] for k in shared} == {k: v1["properties"][k] for k in shared}


# ---------------------------------------------------------------------------------------------
# Unknown values render as the schema's defaults
# ---------------------------------------------------------------------------------------------


def defaulted(
    instance: Any, schema: dict[str, Any], root: dict[str, Any], path: str = ""
) -> Iterator[tuple[str, Any, Any]]:
    """(path, rendered value, schema default) for every rendered scalar whose schema has one."""
    if "$ref" in schema:
        schema = root["definitions"][schema["$ref"].removeprefix("#/definitions/")]
    if "oneOf" in schema:
        if instance is not None:
            (branch,) = [s for s in schema["oneOf"] if s.get("type") != "null"]
            yield from defaulted(instance, branch, root, path)
        return
    if isinstance(instance, dict):
        # Records and maps: descend. A map's own default ({}) is not a value that can be unknown.
        for name, value in instance.items():
            member = schema.get("properties", {}).get(name, schema.get("additionalProperties"))
            yield from defaulted(value, member, root, f"{path}/{name}")
    elif "default" in schema:
        yield path, instance, schema["default"]


def skeleton_sdk() -> m.TwilioSdk:
    return m.TwilioSdk(
        browser=m.Browser(), os=m.OperatingSystem(), device=m.Device(), engine=m.Engine(),
        app=m.AppInfo(),
    )  # fmt: skip


def skeleton_client_metadata() -> m.ClientMetadata:
    return m.ClientMetadata(location=m.Location(lat=1.0, lon=2.0), sdk=skeleton_sdk())


def skeletons() -> list[m.InsightEvent]:
    """Events whose every object is present and every unknown scalar is None."""
    base: dict[str, Any] = {"account_sid": ACCOUNT, "call_sid": CALL, "time": T0}
    relay = m.ConversationRelayData(
        tts_latency=m.LatencyEvent(), stt_latency=m.LatencyEvent(),
        interrupt=m.InterruptEvent(type="SPEECH"), last_token_received=m.LastTokenReceived(),
        configurations=m.RelayConfiguration(languages={"en-US": m.LanguageSettings()}),
        language_changed=m.LanguageChanged(), call_wrap_up=m.CallWrapUp(),
        error=m.ConversationRelayError(),
    )  # fmt: skip
    sdk_event = m.SdkEventData(
        error=m.ErrorInfo(), feedback=m.FeedbackInfo(), metric=m.MetricData(),
        ice_candidate_pair=m.IceCandidatePair(), metadata=skeleton_client_metadata(),
    )  # fmt: skip
    settings_ = m.SdkSettings()
    party = m.CallParty(location=m.Location(lat=0.0, lon=0.0), sdk=skeleton_sdk())
    gateway_edge = m.GatewayEdgeSummary(
        properties=m.EdgeProperties(), inbound=m.Metrics(), outbound=m.Metrics()
    )
    return [
        m.CallEvent(**base, seq=1, edge="sdk_edge", group="g", name="n", sdk=sdk_event,
                    conversation_relay=relay),
        m.CallEvent(**base, seq=2, edge="sip_edge", group="g", name="n",
                    gateway=m.GatewayEventData(metadata=m.GatewayMetadata())),
        m.CallMetric(**base, window_start=T0, edge="sdk_edge", direction="both",
                     interval=m.Metrics(), cumulative=m.Metrics(),
                     client_metadata=skeleton_client_metadata()),
        m.CallMetric(**base, window_start=T0, edge="carrier_edge", direction="inbound",
                     gateway_metadata=m.GatewayMetadata()),
        m.CallSummary(
            **base, kind="partial", processing_state="partial", processing_version=1,
            call_type="sip", call_state="answered", from_=party, to=party,
            carrier_edge=gateway_edge, sip_edge=gateway_edge, client_edge=gateway_edge,
            sdk_edge=m.SdkEdgeSummary(
                properties=m.SdkEdgeProperties(settings=settings_),
                events=m.SdkEventCounts(feedback=m.FeedbackInfo()),
            ),
            attributes=m.SummaryAttributes(),
            properties=m.SummaryProperties(settings=settings_),
            trust=m.Trust(verified_caller=m.VerifiedCaller(), branded_call=m.BrandedCall()),
        ),
    ]  # fmt: skip


def describe(event: m.InsightEvent) -> str:
    return f"{type(event).__name__}-{getattr(event, 'edge', '')}"


@pytest.mark.parametrize("event", skeletons(), ids=describe)
def test_unknown_scalars_render_as_the_schema_default(event: m.InsightEvent) -> None:
    for version in supported_versions(event.schema_id):
        root = load_schema(event.schema_id, version)
        rendered = render(event, version)
        checked = list(defaulted(rendered, root, root))
        assert checked
        wrong = [(path, value, default) for path, value, default in checked if value != default]
        assert wrong == []
        assert errors(event.schema_id, version, rendered) == []


def test_known_values_win_over_defaults() -> None:
    metric = m.CallMetric(
        account_sid=ACCOUNT, call_sid=CALL, time=T0, window_start=T0, edge="sdk_edge",
        direction="both", codec=111, codec_name="opus",
    )  # fmt: skip
    assert render(metric, 2)["sdk_edge"] == {"codec": 111, "codec_name": "opus"}
    summary = summary_with_edges(
        properties=m.SummaryProperties(media_region="us2", disconnected_by="callee")
    )
    properties = render(summary, 1)["properties"]
    assert (properties["media_region"], properties["disconnected_by"]) == ("us2", "callee")


def test_unmeasured_stats_are_left_out_not_zeroed() -> None:
    interval = m.Metrics(jitter=m.MetricStats(), rtt=m.MetricStats(avg=0.0), packets_lost=0)
    metric = m.CallMetric(
        account_sid=ACCOUNT, call_sid=CALL, time=T0, window_start=T0, edge="client_edge",
        direction="inbound", interval=interval,
    )  # fmt: skip
    assert render(metric, 2)["client_edge"]["interval"] == {"packets_lost": 0, "rtt": {"avg": 0.0}}


def test_times_are_rendered_in_utc_with_the_precision_twilio_uses() -> None:
    moment = datetime(2020, 1, 2, 22, 18, 36, 28999, tzinfo=UTC)
    event = m.CallEvent(
        account_sid=ACCOUNT, call_sid=CALL, time=moment, seq=0, edge="unknown_edge", group="g",
        name="n",
    )  # fmt: skip
    assert render(event, 2)["timestamp"] == "2020-01-02T22:18:36.028Z"
    summary = m.CallSummary(
        account_sid=ACCOUNT, call_sid=CALL, time=moment, kind="complete",
        processing_state="complete", processing_version=1, call_type="carrier",
        call_state="completed", start_time=moment, created_time=None,
    )  # fmt: skip
    rendered = render(summary, 2)
    assert (rendered["start_time"], rendered["created_time"]) == ("2020-01-02T22:18:36Z", None)


# ---------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------


def one_of_each() -> list[m.InsightEvent]:
    test_event = m.TestEvent(
        account_sid=ACCOUNT, sink_sid="DG" + "0" * 32, test_id=str(uuid.UUID(int=7)), time=T0
    )
    return [*skeletons()[::2], test_event]


@pytest.mark.parametrize("event", one_of_each(), ids=describe)
def test_versions_without_a_renderer_are_refused(event: m.InsightEvent) -> None:
    newest = max(supported_versions(event.schema_id))
    for version in (0, -1, newest + 1):
        with pytest.raises(UnsupportedSchemaVersion) as raised:
            render(event, version)
        assert (raised.value.schema_id, raised.value.version) == (event.schema_id, version)
        assert event.schema_id in str(raised.value)
        assert isinstance(raised.value, ValueError)


def test_supported_versions() -> None:
    assert supported_versions("VoiceInsights.CallEvent") == (1, 2, 3)
    assert supported_versions("VoiceInsights.CallMetric") == (1, 2)
    assert supported_versions("VoiceInsights.CallSummary") == (1, 2)
    assert supported_versions("EventStreams.TestSink") == (1,)
    assert supported_versions("VoiceInsights.ConferenceSummary") == ()


# ---------------------------------------------------------------------------------------------
# The canonical model's contract with the envelope (cloudevents.py) and the engine
# ---------------------------------------------------------------------------------------------


def event_on(edge: m.Edge, seq: int = 4) -> m.CallEvent:
    return m.CallEvent(
        account_sid=ACCOUNT, call_sid=CALL, time=T0, seq=seq, edge=edge, group="g", name="n"
    )


@pytest.mark.parametrize(
    ("edge", "family"),
    [
        ("sdk_edge", "sdk"),
        ("carrier_edge", "gateway"),
        ("sip_edge", "gateway"),
        ("client_edge", "gateway"),
        ("unknown_edge", "gateway"),
    ],
)
def test_event_types_follow_the_edge(edge: m.Edge, family: str) -> None:
    assert event_on(edge).event_type == f"com.twilio.voice.insights.call-event.{family}"
    metric = m.CallMetric(
        account_sid=ACCOUNT, call_sid=CALL, time=T0, window_start=T0, edge=edge, direction="both"
    )
    assert metric.event_type == f"com.twilio.voice.insights.call-metrics.{family}"


@pytest.mark.parametrize("kind", ["partial", "predicted-complete", "complete"])
def test_summary_event_type_is_its_kind(kind: m.SummaryKind) -> None:
    summary = msgspec.structs.replace(summary_with_edges(), kind=kind)
    assert summary.event_type == f"com.twilio.voice.insights.call-summary.{kind}"
    assert summary.identity == f"summary/{kind}/3"


def test_identities_and_schema_ids() -> None:
    assert event_on("sip_edge", seq=12).identity == "event/sip_edge/12"
    metric = m.CallMetric(
        account_sid=ACCOUNT, call_sid=CALL, time=T0 + timedelta(seconds=10), window_start=T0,
        edge="carrier_edge", direction="outbound",
    )  # fmt: skip
    assert metric.identity == "metric/carrier_edge/outbound/1578324108006"
    test_event = m.TestEvent(
        account_sid=ACCOUNT, sink_sid="DG" + "0" * 32,
        test_id="cae2f9e2-c277-4612-8ad3-93c1a7a3ef88", time=T0,
    )  # fmt: skip
    assert test_event.identity == "test/cae2f9e2-c277-4612-8ad3-93c1a7a3ef88"
    assert test_event.event_type == "com.twilio.eventstreams.test-event"
    assert test_event.call_sid is None
    events = (event_on("sdk_edge"), metric, summary_with_edges(), test_event)
    assert [e.schema_id for e in events] == [
        "VoiceInsights.CallEvent", "VoiceInsights.CallMetric", "VoiceInsights.CallSummary",
        "EventStreams.TestSink",
    ]  # fmt: skip


@AUXILIARY
@given(events=st.lists(call_events(), min_size=2, max_size=2))
def test_identity_tells_events_of_one_call_apart(events: list[m.CallEvent]) -> None:
    first, second = events
    same_occurrence = (first.edge, first.seq) == (second.edge, second.seq)
    assert (first.identity == second.identity) == same_occurrence


def bad(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "account_sid": ACCOUNT, "call_sid": CALL, "time": T0, "seq": 0, "edge": "sdk_edge",
        "group": "g", "name": "n",
    }  # fmt: skip
    return fields | changes


@pytest.mark.parametrize(
    "fields",
    [
        bad(time=datetime(2020, 1, 1)),
        bad(time=datetime(2020, 1, 1, tzinfo=timezone(timedelta(hours=2)))),
        bad(account_sid="AC123"),
        bad(call_sid=ACCOUNT),
        bad(seq=-1),
        bad(edge="carrier_edge", sdk=m.SdkEventData()),
        bad(edge="sdk_edge", gateway=m.GatewayEventData()),
        bad(edge="unknown_edge", gateway=m.GatewayEventData()),
    ],
)
def test_call_events_that_could_not_render_validly_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        m.CallEvent(**fields)


def test_invariants_hold_on_decode_too() -> None:
    event = msgspec.json.encode(event_on("carrier_edge"))
    tampered = event.replace(b'"seq":4', b'"seq":-4')
    assert tampered != event
    with pytest.raises(msgspec.ValidationError, match="seq"):
        msgspec.json.decode(tampered, type=m.CallEvent)


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        (m.CallMetric, {"window_start": T0 + timedelta(seconds=1)}),
        (m.CallMetric, {"edge": "unknown_edge", "codec": 0}),
        (m.CallMetric, {"edge": "sdk_edge", "gateway_metadata": m.GatewayMetadata()}),
        (m.CallMetric, {"edge": "sip_edge", "client_metadata": m.ClientMetadata()}),
        (m.Metrics, {"packet_delay_variation": {"p50": 1}}),
        (m.SdkEventCounts, {"errors": {-1: 1}}),
        (m.CallSummary, {"tags": ("low_mos", "low_mos")}),
        (m.CallSummary, {"parent_call_sid": ""}),
        (m.CallSummary, {"end_time": datetime(2020, 1, 1)}),
        (m.CallSummary, {"processing_version": -1}),
        (m.TestEvent, {"test_id": "CAE2F9E2-C277-4612-8AD3-93C1A7A3EF88"}),
        (m.TestEvent, {"test_id": "not-a-uuid"}),
        (m.TestEvent, {"sink_sid": "DF" + "0" * 32}),
    ],
)
def test_other_invalid_canonical_values_are_refused(
    kind: type[Any], fields: dict[str, Any]
) -> None:
    valid: dict[type[Any], dict[str, Any]] = {
        m.CallMetric: {"account_sid": ACCOUNT, "call_sid": CALL, "time": T0, "window_start": T0,
                       "edge": "carrier_edge", "direction": "inbound"},
        m.Metrics: {},
        m.SdkEventCounts: {},
        m.CallSummary: {"account_sid": ACCOUNT, "call_sid": CALL, "time": T0, "kind": "partial",
                        "processing_state": "partial", "processing_version": 1,
                        "call_type": "sip", "call_state": "completed"},
        m.TestEvent: {"account_sid": ACCOUNT, "sink_sid": "DG" + "0" * 32,
                      "test_id": "cae2f9e2-c277-4612-8ad3-93c1a7a3ef88", "time": T0},
    }  # fmt: skip
    kind(**valid[kind])  # the baseline is valid, so the change below is what is refused
    with pytest.raises(ValueError):
        kind(**(valid[kind] | fields))
