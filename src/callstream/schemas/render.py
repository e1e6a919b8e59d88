"""Renderers: canonical insight events to the ``data`` of each (schema id, version).

Every version has its own entry point (``call_event_v1`` ... ``sink_test_v1``) so that what a
version emits is readable in one place; the shared parts are built by small helpers that take the
few switches versions differ in. How unknown values are rendered follows three rules, explained with
their evidence in docs/event-schemas.md:

* a scalar that is unknown gets the schema's ``default`` (``""``, ``0``, ``false``, ``unknown_*``);
* a record-like object that is unknown is ``null`` where Twilio shows ``null`` (edges, summary
  members) and absent where Twilio's confirmed ``required`` lists leave it out (SDK client metadata,
  edge metrics, ConversationRelay payloads);
* a measurement that was not taken is absent, never ``0``.
"""

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from callstream.model.insights import (
    AppInfo,
    Browser,
    CallEvent,
    CallMetric,
    CallParty,
    CallSummary,
    CallWrapUp,
    ClientMetadata,
    ConversationRelayData,
    ConversationRelayError,
    Device,
    Edge,
    EdgeProperties,
    Engine,
    ErrorInfo,
    FeedbackInfo,
    GatewayEdgeSummary,
    GatewayMetadata,
    IceCandidate,
    IceCandidatePair,
    InsightEvent,
    InterruptEvent,
    LanguageChanged,
    LanguageSettings,
    LastTokenReceived,
    LatencyEvent,
    Location,
    MetricData,
    Metrics,
    MetricStats,
    OperatingSystem,
    RelayConfiguration,
    SdkEdgeProperties,
    SdkEdgeSummary,
    SdkEventCounts,
    SdkEventData,
    SdkSettings,
    SummaryAttributes,
    SummaryProperties,
    TestEvent,
    Trust,
    TwilioSdk,
)

__all__ = [
    "UnsupportedSchemaVersion",
    "call_event_v1",
    "call_event_v2",
    "call_event_v3",
    "call_metric_v1",
    "call_metric_v2",
    "call_summary_v1",
    "call_summary_v2",
    "render",
    "sink_test_v1",
    "supported_versions",
]

Json = dict[str, Any]
_T = TypeVar("_T")

UNKNOWN_REALM: Final = "unknown_realm"
UNKNOWN_DISCONNECTED_BY: Final = "unknown_disconnected_by"
UNKNOWN_CODEC_NAME: Final = "unknown_codec_name"
_GATEWAY_EDGE_ORDER: Final[tuple[Edge, ...]] = ("carrier_edge", "client_edge", "sip_edge")


class UnsupportedSchemaVersion(ValueError):
    """The event's schema has no renderer for the requested version."""

    def __init__(self, schema_id: str, version: int) -> None:
        super().__init__(f"{schema_id} has no renderer for version {version}")
        self.schema_id = schema_id
        self.version = version


# ---------------------------------------------------------------------------------------------
# Scalars and small helpers
# ---------------------------------------------------------------------------------------------


def _str(value: str | None, default: str = "") -> str:
    return default if value is None else value


def _int(value: int | None) -> int:
    return 0 if value is None else value


def _bool(value: bool | None) -> bool:
    return False if value is None else value


def _time_ms(value: datetime) -> str:
    # Events and metrics carry milliseconds ("2020-01-02T22:18:36.028Z", §2.2; §3.2 v2 example).
    utc = value.astimezone(UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


def _time_s(value: datetime | None) -> str | None:
    # Summaries carry whole seconds ("2020-07-23T22:56:28Z", KQS example, §4.4).
    return None if value is None else f"{value.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


def _or_null(value: _T | None, build: Callable[[_T], Json]) -> Json | None:
    return None if value is None else build(value)


def _present(members: Mapping[str, Any]) -> Json:
    """Drops members that are ``None``: for objects whose unknown members are omitted."""
    return {name: value for name, value in members.items() if value is not None}


# ---------------------------------------------------------------------------------------------
# SDK endpoint metadata (CallEvent, CallMetric, CallSummary from/to)
# ---------------------------------------------------------------------------------------------


def _browser(value: Browser) -> Json:
    return {"name": _str(value.name), "major": _str(value.major), "version": _str(value.version)}


def _os(value: OperatingSystem) -> Json:
    return {"name": _str(value.name), "version": _str(value.version)}


def _device(value: Device) -> Json:
    return {
        "model": _str(value.model),
        "type": _str(value.type),
        "vendor": _str(value.vendor),
        "arch": _str(value.arch),
    }


def _engine(value: Engine) -> Json:
    return {"name": _str(value.name), "version": _str(value.version)}


def _app(value: AppInfo) -> Json:
    return {"name": _str(value.name), "version": _str(value.version)}


def _location(value: Location) -> Json:
    return {"lat": value.lat, "lon": value.lon}


def _twilio_sdk(value: TwilioSdk, *, edge_location: bool, app: bool) -> Json:
    # Member order follows Twilio's CallEvent/3 example (seed 000); nested objects are omitted when
    # unknown, and only scalars are never None after defaulting, so _present drops just those.
    return _present(
        {
            "type": _str(value.type),
            "version": _str(value.version),
            "platform": _str(value.platform),
            "region": _str(value.region),
            "selected_region": _str(value.selected_region),
            "browser": _or_null(value.browser, _browser),
            "os": _or_null(value.os, _os),
            "device": _or_null(value.device, _device),
            "engine": _or_null(value.engine, _engine),
            "edge_location": _str(value.edge_location) if edge_location else None,
            "app": _or_null(value.app, _app) if app else None,
        }
    )


def _client_metadata(value: ClientMetadata, *, edge_location: bool) -> Json:
    sdk = value.sdk
    return _present(
        {
            "client_name": _str(value.client_name),
            "location": _or_null(value.location, _location),
            "city": _str(value.city),
            "country_code": _str(value.country_code),
            "country_subdivision": _str(value.country_subdivision),
            "ip_address": _str(value.ip_address),
            "sdk": None
            if sdk is None
            else _twilio_sdk(sdk, edge_location=edge_location, app=False),
        }
    )


def _gateway_metadata(value: GatewayMetadata, *, edge_location: bool) -> Json:
    out: Json = {
        "region": _str(value.region),
        "twilio_ip": _str(value.twilio_ip),
        "external_ip": _str(value.external_ip),
    }
    if edge_location:
        out["edge_location"] = _str(value.edge_location)
    return out


def _feedback(value: FeedbackInfo) -> Json:
    return {"score": _int(value.score), "reason": _str(value.reason)}


# ---------------------------------------------------------------------------------------------
# VoiceInsights.CallEvent
# ---------------------------------------------------------------------------------------------


def _error(value: ErrorInfo) -> Json:
    return {"code": _int(value.code), "message": _str(value.message)}


def _metric_data(value: MetricData) -> Json:
    threshold = 0.0 if value.threshold is None else value.threshold
    return {"threshold": threshold, "values": list(value.values)}


def _candidate(value: IceCandidate | None) -> Json:
    candidate = value or IceCandidate()
    return {"type": _str(candidate.type), "protocol": _str(candidate.protocol)}


def _candidate_pair(value: IceCandidatePair) -> Json:
    return {"remote": _candidate(value.remote), "local": _candidate(value.local)}


def _sdk_event(value: SdkEventData | None, *, edge_location: bool) -> Json:
    data = value or SdkEventData()
    meta = data.metadata
    return _present(
        {
            "error": _or_null(data.error, _error),
            "feedback": _or_null(data.feedback, _feedback),
            "metric": _or_null(data.metric, _metric_data),
            "ice_candidate_pair": _or_null(data.ice_candidate_pair, _candidate_pair),
            "metadata": None
            if meta is None
            else _client_metadata(meta, edge_location=edge_location),
        }
    )


def _gateway_event(event: CallEvent, *, edge_location: bool) -> Json:
    meta = None if event.gateway is None else event.gateway.metadata
    if meta is None:
        return {}
    return {"metadata": _gateway_metadata(meta, edge_location=edge_location)}


def _latency(value: LatencyEvent) -> Json:
    return {"latency_ms": _int(value.latency_ms)}


def _interrupt(value: InterruptEvent) -> Json:
    return {"type": value.type}


def _last_token(value: LastTokenReceived) -> Json:
    return {"total_tokens": _int(value.total_tokens), "total_words": _int(value.total_words)}


def _language(value: LanguageSettings) -> Json:
    return {
        "tts_provider": _str(value.tts_provider),
        "voice": _str(value.voice),
        "transcription_provider": _str(value.transcription_provider),
        "speech_model": _str(value.speech_model),
    }


def _configuration(value: RelayConfiguration) -> Json:
    return {
        "configurations": dict(value.configurations),
        "languages": {code: _language(lang) for code, lang in value.languages.items()},
    }


def _language_changed(value: LanguageChanged) -> Json:
    return {
        "tts_language_code": _str(value.tts_language_code),
        "transcription_language_code": _str(value.transcription_language_code),
    }


def _wrap_up(value: CallWrapUp) -> Json:
    return {
        "duration_in_seconds": _int(value.duration_in_seconds),
        "end_status": value.end_status,
    }


def _relay_error(value: ConversationRelayError) -> Json:
    return {"error_code": _int(value.error_code), "message": _str(value.message)}


def _conversation_relay(value: ConversationRelayData) -> Json:
    head: Json = {
        "session_id": _str(value.session_id),
        "name": _str(value.name),
        "sequence_number": _int(value.sequence_number),
    }
    payloads = {
        "tts_latency": _or_null(value.tts_latency, _latency),
        "stt_latency": _or_null(value.stt_latency, _latency),
        "interrupt": _or_null(value.interrupt, _interrupt),
        "last_token_received": _or_null(value.last_token_received, _last_token),
        "configurations": _or_null(value.configurations, _configuration),
        "language_changed": _or_null(value.language_changed, _language_changed),
        "call_wrap_up": _or_null(value.call_wrap_up, _wrap_up),
        "error": _or_null(value.error, _relay_error),
    }
    return head | _present(payloads)


def _call_event(event: CallEvent, *, edge_location: bool, relay: bool) -> Json:
    out: Json = {
        "timestamp": _time_ms(event.time),
        "call_sid": event.call_sid,
        "account_sid": event.account_sid,
        "edge": event.edge,
        "name": event.name,
        "group": event.group,
        "level": event.level,
    }
    for edge in _GATEWAY_EDGE_ORDER:
        matches = edge == event.edge
        out[edge] = _gateway_event(event, edge_location=edge_location) if matches else None
    is_sdk = event.edge == "sdk_edge"
    out["sdk_edge"] = _sdk_event(event.sdk, edge_location=edge_location) if is_sdk else None
    if relay:
        out["conversation_relay_data"] = _or_null(event.conversation_relay, _conversation_relay)
    return out


def call_event_v1(event: CallEvent) -> Json:
    """CallEvent/1: before edge_location existed (Nov 2020)."""
    return _call_event(event, edge_location=False, relay=False)


def call_event_v2(event: CallEvent) -> Json:
    """CallEvent/2: adds edge_location to gateway metadata and to the SDK description."""
    return _call_event(event, edge_location=True, relay=False)


def call_event_v3(event: CallEvent) -> Json:
    """CallEvent/3: adds ``conversation_relay_data``."""
    return _call_event(event, edge_location=True, relay=True)


# ---------------------------------------------------------------------------------------------
# VoiceInsights.CallMetric (and the measurement objects summaries reuse)
# ---------------------------------------------------------------------------------------------


def _stats(value: MetricStats | None) -> Json | None:
    if value is None:
        return None
    measured = _present(
        {"min": value.min, "max": value.max, "avg": value.avg, "value": value.value}
    )
    # A stats object with nothing in it says nothing was measured, so it is left out entirely.
    return measured or None


def _metrics(value: Metrics) -> Json:
    pdv = value.packet_delay_variation
    return _present(
        {
            "codec": value.codec,
            "codec_name": value.codec_name,
            "packets_received": value.packets_received,
            "packets_sent": value.packets_sent,
            "packets_lost": value.packets_lost,
            "packets_loss_percentage": value.packets_loss_percentage,
            "jitter": _stats(value.jitter),
            "rtt": _stats(value.rtt),
            "mos": _stats(value.mos),
            "audio_in": _stats(value.audio_in),
            "audio_out": _stats(value.audio_out),
            "latency": _stats(value.latency),
            "bytes_received": value.bytes_received,
            "bytes_sent": value.bytes_sent,
            "packet_delay_variation": None if pdv is None else dict(pdv),
        }
    )


def _edge_metrics(metric: CallMetric, metadata: Json | None) -> Json:
    out: Json = {}
    if metric.codec is not None:
        out["codec"] = metric.codec
    out["codec_name"] = _str(metric.codec_name, UNKNOWN_CODEC_NAME)
    optional = {
        "cumulative": _or_null(metric.cumulative, _metrics),
        "interval": _or_null(metric.interval, _metrics),
        "metadata": metadata,
    }
    return out | _present(optional)


def _metric_sdk_edge(metric: CallMetric, *, edge_location: bool) -> Json:
    meta = metric.client_metadata
    rendered = None if meta is None else _client_metadata(meta, edge_location=edge_location)
    return _edge_metrics(metric, rendered)


def _metric_gateway_edge(metric: CallMetric, *, edge_location: bool) -> Json:
    meta = metric.gateway_metadata
    rendered = None if meta is None else _gateway_metadata(meta, edge_location=edge_location)
    return _edge_metrics(metric, rendered)


def _call_metric(metric: CallMetric, *, edge_location: bool) -> Json:
    out: Json = {
        "timestamp": _time_ms(metric.time),
        "call_sid": metric.call_sid,
        "account_sid": metric.account_sid,
        "edge": metric.edge,
        "direction": metric.direction,
    }
    for edge in _GATEWAY_EDGE_ORDER:
        matches = edge == metric.edge
        out[edge] = _metric_gateway_edge(metric, edge_location=edge_location) if matches else None
    is_sdk = metric.edge == "sdk_edge"
    out["sdk_edge"] = _metric_sdk_edge(metric, edge_location=edge_location) if is_sdk else None
    return out


def call_metric_v1(metric: CallMetric) -> Json:
    """CallMetric/1: before edge_location existed (Nov 2020)."""
    return _call_metric(metric, edge_location=False)


def call_metric_v2(metric: CallMetric) -> Json:
    """CallMetric/2: adds edge_location to gateway metadata and to the SDK description."""
    return _call_metric(metric, edge_location=True)


# ---------------------------------------------------------------------------------------------
# VoiceInsights.CallSummary
# ---------------------------------------------------------------------------------------------


def _party(value: CallParty | None, *, v2: bool) -> Json:
    party = value or CallParty()
    sdk = party.sdk
    return {
        "caller": _str(party.caller),
        "callee": _str(party.callee),
        "carrier": _str(party.carrier),
        "connection": _str(party.connection),
        "number_prefix": _str(party.number_prefix),
        "location": _or_null(party.location, _location),
        "city": _str(party.city),
        "country_code": _str(party.country_code),
        "country_subdivision": _str(party.country_subdivision),
        "ip_address": _str(party.ip_address),
        "sdk": None if sdk is None else _twilio_sdk(sdk, edge_location=v2, app=v2),
    }


def _settings(value: SdkSettings) -> Json:
    return {
        "dscp": _bool(value.dscp),
        "ice_restart_enabled": _bool(value.ice_restart_enabled),
        "edge": _str(value.edge),
        "selected_edges": list(value.selected_edges),
    }


def _properties_v1(value: SummaryProperties | None) -> Json:
    p = value or SummaryProperties()
    return {
        "q850_cause": _int(p.q850_cause),
        "last_sip_response_num": _int(p.last_sip_response_num),
        "pdd_ms": _int(p.pdd_ms),
        "route_id": _str(p.route_id),
        "media_region": _str(p.media_region, UNKNOWN_REALM),
        "signaling_region": _str(p.signaling_region, UNKNOWN_REALM),
        "twilio_media_ip": _str(p.twilio_media_ip),
        "twilio_signaling_ip": _str(p.twilio_signaling_ip),
        "external_media_ip": _str(p.external_media_ip),
        "external_signaling_ip": _str(p.external_signaling_ip),
        "sip_call_id": _str(p.sip_call_id),
        "user_agent": _str(p.user_agent),
        "selected_region": _str(p.selected_region, UNKNOWN_REALM),
        "region": _str(p.region, UNKNOWN_REALM),
        "trunk_sid": _str(p.trunk_sid),
        "disconnected_by": _str(p.disconnected_by, UNKNOWN_DISCONNECTED_BY),
        "direction": _str(p.direction, "unknown"),
        "settings": _or_null(p.settings, _settings),
    }


def _properties_v2(value: SummaryProperties | None) -> Json:
    p = value or SummaryProperties()
    return {
        "direction": _str(p.direction, "unknown"),
        "disconnected_by": _str(p.disconnected_by, UNKNOWN_DISCONNECTED_BY),
        "last_sip_response_num": _int(p.last_sip_response_num),
        "pdd_ms": _int(p.pdd_ms),
        "queue_time": _int(p.queue_time),
    }


def _edge_properties(value: EdgeProperties | None, *, v2: bool) -> Json:
    p = value or EdgeProperties()
    out: Json = {
        "direction": p.direction,
        "media_region": _str(p.media_region, UNKNOWN_REALM),
        "signaling_region": _str(p.signaling_region, UNKNOWN_REALM),
    }
    if v2:
        out["edge_location"] = _str(p.edge_location)
    return out | {
        "twilio_media_ip": _str(p.twilio_media_ip),
        "twilio_signaling_ip": _str(p.twilio_signaling_ip),
        "external_media_ip": _str(p.external_media_ip),
        "external_signaling_ip": _str(p.external_signaling_ip),
        "sip_call_id": _str(p.sip_call_id),
        "user_agent": _str(p.user_agent),
        "selected_region": _str(p.selected_region, UNKNOWN_REALM),
        "region": _str(p.region, UNKNOWN_REALM),
        "disconnected_by": _str(p.disconnected_by, UNKNOWN_DISCONNECTED_BY),
        "trunk_sid": _str(p.trunk_sid),
    }


def _directional(inbound: Metrics | None, outbound: Metrics | None) -> Json:
    return {"inbound": _or_null(inbound, _metrics), "outbound": _or_null(outbound, _metrics)}


def _gateway_summary(value: GatewayEdgeSummary, *, v2: bool) -> Json:
    return {
        "properties": _edge_properties(value.properties, v2=v2),
        "metrics": _directional(value.inbound, value.outbound),
    }


def _sdk_properties(value: SdkEdgeProperties | None) -> Json:
    p = value or SdkEdgeProperties()
    return {
        "direction": p.direction,
        "disconnected_by": _str(p.disconnected_by, UNKNOWN_DISCONNECTED_BY),
        "settings": _or_null(p.settings, _settings),
    }


def _sdk_events(value: SdkEventCounts | None) -> Json:
    counts = value or SdkEventCounts()
    return {
        "levels": dict(counts.levels),
        "groups": dict(counts.groups),
        "errors": {str(code): count for code, count in counts.errors.items()},
        "feedback": _or_null(counts.feedback, _feedback),
    }


def _sdk_summary(value: SdkEdgeSummary) -> Json:
    return {
        "properties": _sdk_properties(value.properties),
        "metrics": _directional(value.inbound, value.outbound),
        "events": _sdk_events(value.events),
    }


def _attributes(value: SummaryAttributes) -> Json:
    return {"conference_participant": _bool(value.conference_participant)}


def _trust(value: Trust) -> Json:
    verified, branded = value.verified_caller, value.branded_call
    return {
        "verified_caller": None if verified is None else {"verified": _bool(verified.verified)},
        "branded_call": None
        if branded is None
        else {
            "brand_sid": _str(branded.brand_sid),
            "branded": _bool(branded.branded),
            "branded_channel_sid": _str(branded.branded_channel_sid),
            "caller": _str(branded.caller),
            "use_case": _str(branded.use_case),
        },
    }


def _call_summary(summary: CallSummary, *, v2: bool) -> Json:
    def gateway(edge: GatewayEdgeSummary | None) -> Json | None:
        return None if edge is None else _gateway_summary(edge, v2=v2)

    # Member order follows Twilio's v1 example (KQS, §4.4); v2 members slot in beside their kin.
    out: Json = {
        "call_sid": summary.call_sid,
        "account_sid": summary.account_sid,
        "parent_call_sid": _str(summary.parent_call_sid),
        "parent_account_sid": _str(summary.parent_account_sid),
    }
    if v2:
        out["created_time"] = _time_s(summary.created_time)
    out |= {
        "start_time": _time_s(summary.start_time),
        "end_time": _time_s(summary.end_time),
        "duration": _int(summary.duration),
        "connect_duration": _int(summary.connect_duration),
        "call_type": summary.call_type,
        "call_state": summary.call_state,
        "from": _party(summary.from_, v2=v2),
        "to": _party(summary.to, v2=v2),
        "processing_state": summary.processing_state,
        "processing_version": summary.processing_version,
        "sip_edge": gateway(summary.sip_edge),
        "carrier_edge": gateway(summary.carrier_edge),
        "sdk_edge": _or_null(summary.sdk_edge, _sdk_summary),
        "client_edge": gateway(summary.client_edge),
        "tags": list(summary.tags),
        "attributes": _or_null(summary.attributes, _attributes),
        "properties": _properties_v2(summary.properties)
        if v2
        else _properties_v1(summary.properties),
    }
    if v2:
        out["trust"] = _or_null(summary.trust, _trust)
    return out


def call_summary_v1(summary: CallSummary) -> Json:
    """CallSummary/1: the shape of Twilio's Kinesis quickstart example."""
    return _call_summary(summary, v2=False)


def call_summary_v2(summary: CallSummary) -> Json:
    """CallSummary/2: REST parity (created_time, queue_time, edge_location, app info, trust)."""
    return _call_summary(summary, v2=True)


# ---------------------------------------------------------------------------------------------
# EventStreams.TestSink
# ---------------------------------------------------------------------------------------------


def sink_test_v1(event: TestEvent) -> Json:
    """EventStreams.TestSink/1 (named for the Sink Test endpoint, so pytest never collects it)."""
    return {"test_id": event.test_id}


# ---------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------

_CALL_EVENT: Final[Mapping[int, Callable[[CallEvent], Json]]] = {
    1: call_event_v1,
    2: call_event_v2,
    3: call_event_v3,
}
_CALL_METRIC: Final[Mapping[int, Callable[[CallMetric], Json]]] = {
    1: call_metric_v1,
    2: call_metric_v2,
}
_CALL_SUMMARY: Final[Mapping[int, Callable[[CallSummary], Json]]] = {
    1: call_summary_v1,
    2: call_summary_v2,
}
_TEST_SINK: Final[Mapping[int, Callable[[TestEvent], Json]]] = {1: sink_test_v1}

_VERSIONS: Final[Mapping[str, tuple[int, ...]]] = {
    CallEvent.schema_id: tuple(_CALL_EVENT),
    CallMetric.schema_id: tuple(_CALL_METRIC),
    CallSummary.schema_id: tuple(_CALL_SUMMARY),
    TestEvent.schema_id: tuple(_TEST_SINK),
}


def supported_versions(schema_id: str) -> tuple[int, ...]:
    """The versions this module renders for ``schema_id``, ascending (empty if none)."""
    return _VERSIONS.get(schema_id, ())


def render(event: InsightEvent, version: int) -> dict[str, Any]:
    """The CloudEvent ``data`` for ``event`` in schema ``version`` of the event's schema id."""
    match event:
        case CallEvent():
            return _pick(_CALL_EVENT, event.schema_id, version)(event)
        case CallMetric():
            return _pick(_CALL_METRIC, event.schema_id, version)(event)
        case CallSummary():
            return _pick(_CALL_SUMMARY, event.schema_id, version)(event)
        case TestEvent():
            return _pick(_TEST_SINK, event.schema_id, version)(event)


def _pick(table: Mapping[int, _T], schema_id: str, version: int) -> _T:
    try:
        return table[version]
    except KeyError:
        raise UnsupportedSchemaVersion(schema_id, version) from None
