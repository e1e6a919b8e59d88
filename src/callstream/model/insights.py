"""The canonical, version-neutral insight events that the engine produces and renderers consume.

One struct per thing the reference describes. Member names follow Twilio's wire names wherever the
member exists on the wire, so REST or stream payloads convert with ``msgspec.convert`` and a reader
can match a field to docs/event-schemas.md without a lookup table.

``None`` means "unknown". Where Twilio's own enum already has an unknown member (``unknown_edge``,
``unknown`` direction, ``UNKNOWN`` level, ``unknown`` answered_by / end_status), that member is the
only way to say unknown, so the same fact never has two spellings. How each ``None`` is rendered
(``""``, ``0``, an ``unknown_*`` default, ``null`` or an omitted member) is the renderers' business;
see docs/event-schemas.md.

Invariants a schema relies on (aware UTC times, SID formats, which edge may carry which payload)
are checked in ``__post_init__``, which msgspec runs on construction and on decode alike, so every
event that can exist renders to a document that validates. The insights engine builds several
events per telemetry record, so each check settles the usual case cheaply (a time in the ``UTC``
singleton by an identity test, the usual ``dNN`` percentile names by a set lookup) and only
falls back to the full test otherwise; nothing is left unchecked.
"""

import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import ClassVar, Final, Literal, TypeAlias, get_args

import msgspec

__all__ = [
    "EDGES",
    "GATEWAY_EDGES",
    "LEVELS",
    "AnsweredBy",
    "AppInfo",
    "BrandedCall",
    "Browser",
    "CallDirection",
    "CallEvent",
    "CallMetric",
    "CallParty",
    "CallState",
    "CallSummary",
    "CallTag",
    "CallType",
    "CallWrapUp",
    "ClientMetadata",
    "ConversationRelayData",
    "ConversationRelayError",
    "Device",
    "Direction",
    "DisconnectedBy",
    "Edge",
    "EdgeProperties",
    "Engine",
    "ErrorInfo",
    "FeedbackInfo",
    "GatewayEdgeSummary",
    "GatewayEventData",
    "GatewayMetadata",
    "IceCandidate",
    "IceCandidatePair",
    "InsightEvent",
    "InterruptEvent",
    "InterruptType",
    "LanguageChanged",
    "LanguageSettings",
    "LastTokenReceived",
    "LatencyEvent",
    "Level",
    "Location",
    "MetricData",
    "MetricStats",
    "Metrics",
    "OperatingSystem",
    "ProcessingState",
    "RelayConfiguration",
    "SdkEdgeProperties",
    "SdkEdgeSummary",
    "SdkEventCounts",
    "SdkEventData",
    "SdkSettings",
    "SummaryAttributes",
    "SummaryKind",
    "SummaryProperties",
    "TestEvent",
    "Trust",
    "TwilioSdk",
    "VerifiedCaller",
    "WrapUpStatus",
    "epoch_ms",
]

# ---------------------------------------------------------------------------------------------
# Enumerations (reference: voice-insights-model.md §2.1, §3.1, §4.1, §4.2, §4.3, §2.3)
# ---------------------------------------------------------------------------------------------

Edge: TypeAlias = Literal["unknown_edge", "carrier_edge", "sip_edge", "sdk_edge", "client_edge"]
Direction: TypeAlias = Literal["unknown", "inbound", "outbound", "both"]
Level: TypeAlias = Literal["UNKNOWN", "DEBUG", "INFO", "WARNING", "ERROR"]
CallType: TypeAlias = Literal["carrier", "sip", "trunking", "client", "whatsapp"]
CallState: TypeAlias = Literal[
    "ringing", "completed", "busy", "fail", "noanswer", "canceled", "answered", "undialed"
]
AnsweredBy: TypeAlias = Literal[
    "unknown",
    "machine_start",
    "machine_end_beep",
    "machine_end_silence",
    "machine_end_other",
    "human",
    "fax",
]
ProcessingState: TypeAlias = Literal["complete", "partial"]
SummaryKind: TypeAlias = Literal["partial", "predicted-complete", "complete"]
CallDirection: TypeAlias = Literal[
    "inbound", "outbound_api", "outbound_dial", "trunking_originating", "trunking_terminating"
]
# caller/callee at gateway level, local/remote as seen by an SDK (§4.2 properties).
DisconnectedBy: TypeAlias = Literal["caller", "callee", "local", "remote"]
# Union of the gateway and SDK-edge tag tables (§4.3).
CallTag: TypeAlias = Literal[
    "silence",
    "high_jitter",
    "high_packet_loss",
    "high_pdd",
    "high_latency",
    "low_mos",
    "ice_failure",
]
InterruptType: TypeAlias = Literal["DTMF", "SPEECH"]
WrapUpStatus: TypeAlias = Literal["unknown", "failure", "ended", "hung_up"]

GATEWAY_EDGES: Final[frozenset[str]] = frozenset({"carrier_edge", "sip_edge", "client_edge"})

_ACCOUNT_SID: Final = re.compile(r"AC[0-9a-fA-F]{32}")
_CALL_SID: Final = re.compile(r"CA[0-9a-fA-F]{32}")
_SINK_SID: Final = re.compile(r"DG[0-9a-fA-F]{32}")
_PDV_KEY: Final = re.compile(r"d[0-9]+")
# The names gateways use (d50, d90, d99, ...): a set test settles these, the pattern the rest.
_PERCENTILE_KEYS: Final = frozenset(f"d{n}" for n in range(101))
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)
_NO_OFFSET: Final = timedelta(0)


def _check_utc(name: str, value: datetime | None) -> None:
    # Nearly every time carries the UTC singleton itself (telemetry is normalised to it, the
    # engine builds times with it): an identity test settles those without asking for the
    # offset, which costs far more. Any other zone with a zero offset is still accepted.
    if value is None or value.tzinfo is UTC:
        return
    if value.tzinfo is None or value.utcoffset() != _NO_OFFSET:
        raise ValueError(f"{name} must be an aware UTC datetime, got {value!r}")


def _check_sid(name: str, value: str | None, pattern: re.Pattern[str]) -> None:
    if value is not None and pattern.fullmatch(value) is None:
        raise ValueError(f"{name} {value!r} does not match {pattern.pattern}")


def _check_call(account_sid: str, call_sid: str) -> None:
    """The two SIDs every call's event carries (one call for both: it runs per event)."""
    if _ACCOUNT_SID.fullmatch(account_sid) is None or _CALL_SID.fullmatch(call_sid) is None:
        _check_sid("account_sid", account_sid, _ACCOUNT_SID)
        _check_sid("call_sid", call_sid, _CALL_SID)


def epoch_ms(value: datetime) -> int:
    """Whole milliseconds since the Unix epoch, computed without float rounding."""
    return (value - _EPOCH) // _ONE_MS


class _Struct(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Immutable (events are facts), keyword-only (members are many), compact when logged."""


# ---------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------


class Location(_Struct, frozen=True):
    lat: float
    lon: float


class Browser(_Struct, frozen=True):
    name: str | None = None
    major: str | None = None
    version: str | None = None


class OperatingSystem(_Struct, frozen=True):
    name: str | None = None
    version: str | None = None


class Device(_Struct, frozen=True):
    model: str | None = None
    type: str | None = None
    vendor: str | None = None
    arch: str | None = None


class Engine(_Struct, frozen=True):
    name: str | None = None
    version: str | None = None


class AppInfo(_Struct, frozen=True):
    """The application that embeds an SDK (summary v2 "application info", §4.4)."""

    name: str | None = None
    version: str | None = None


class TwilioSdk(_Struct, frozen=True):
    type: str | None = None
    version: str | None = None
    platform: str | None = None
    region: str | None = None
    selected_region: str | None = None
    edge_location: str | None = None
    browser: Browser | None = None
    os: OperatingSystem | None = None
    device: Device | None = None
    engine: Engine | None = None
    app: AppInfo | None = None


class ClientMetadata(_Struct, frozen=True):
    """Where an SDK endpoint runs: the ``metadata`` of an ``sdk_edge`` event or metric."""

    client_name: str | None = None
    city: str | None = None
    country_code: str | None = None
    country_subdivision: str | None = None
    ip_address: str | None = None
    location: Location | None = None
    sdk: TwilioSdk | None = None


class GatewayMetadata(_Struct, frozen=True):
    """The ``metadata`` of a carrier/sip/client edge event or metric."""

    region: str | None = None
    twilio_ip: str | None = None
    external_ip: str | None = None
    edge_location: str | None = None


class FeedbackInfo(_Struct, frozen=True):
    score: int | None = None
    reason: str | None = None


# ---------------------------------------------------------------------------------------------
# Call events (§2)
# ---------------------------------------------------------------------------------------------


class ErrorInfo(_Struct, frozen=True):
    code: int | None = None
    message: str | None = None


class MetricData(_Struct, frozen=True):
    """The measurement behind a quality warning; a single-value warning has one entry in values."""

    threshold: float | None = None
    values: tuple[float, ...] = ()


class IceCandidate(_Struct, frozen=True):
    type: str | None = None
    protocol: str | None = None


class IceCandidatePair(_Struct, frozen=True):
    local: IceCandidate | None = None
    remote: IceCandidate | None = None


class SdkEventData(_Struct, frozen=True):
    """The ``sdk_edge`` object of an SDK event; only the parts this event carries are set."""

    error: ErrorInfo | None = None
    feedback: FeedbackInfo | None = None
    metric: MetricData | None = None
    ice_candidate_pair: IceCandidatePair | None = None
    metadata: ClientMetadata | None = None


class GatewayEventData(_Struct, frozen=True):
    metadata: GatewayMetadata | None = None


class LatencyEvent(_Struct, frozen=True):
    latency_ms: int | None = None


class InterruptEvent(_Struct, frozen=True):
    type: InterruptType


class LastTokenReceived(_Struct, frozen=True):
    total_tokens: int | None = None
    total_words: int | None = None


class LanguageSettings(_Struct, frozen=True):
    tts_provider: str | None = None
    voice: str | None = None
    transcription_provider: str | None = None
    speech_model: str | None = None


class RelayConfiguration(_Struct, frozen=True):
    # Provider settings are an open key/value set (seed 000 shows camelCase provider options).
    configurations: Mapping[str, str] = {}
    languages: Mapping[str, LanguageSettings] = {}


class LanguageChanged(_Struct, frozen=True):
    tts_language_code: str | None = None
    transcription_language_code: str | None = None


class CallWrapUp(_Struct, frozen=True):
    duration_in_seconds: int | None = None
    end_status: WrapUpStatus = "unknown"


class ConversationRelayError(_Struct, frozen=True):
    error_code: int | None = None
    message: str | None = None


class ConversationRelayData(_Struct, frozen=True):
    """A ConversationRelay session event (CallEvent v3); one or more payloads are set."""

    session_id: str | None = None
    name: str | None = None
    sequence_number: int | None = None
    tts_latency: LatencyEvent | None = None
    stt_latency: LatencyEvent | None = None
    interrupt: InterruptEvent | None = None
    last_token_received: LastTokenReceived | None = None
    configurations: RelayConfiguration | None = None
    language_changed: LanguageChanged | None = None
    call_wrap_up: CallWrapUp | None = None
    error: ConversationRelayError | None = None


class CallEvent(_Struct, frozen=True):
    """One call-progress (gateway) or SDK event.

    ``seq`` is assigned by the insights engine, unique per (call, edge), so that a replayed event
    keeps its identity. Only the payload matching ``edge`` may be set.
    """

    schema_id: ClassVar[str] = "VoiceInsights.CallEvent"

    account_sid: str
    call_sid: str
    time: datetime
    seq: int
    edge: Edge
    group: str
    name: str
    level: Level = "UNKNOWN"
    gateway: GatewayEventData | None = None
    sdk: SdkEventData | None = None
    conversation_relay: ConversationRelayData | None = None

    def __post_init__(self) -> None:
        _check_call(self.account_sid, self.call_sid)
        time = self.time
        if time is None or time.tzinfo is not UTC:  # (the usual case settles without the call)
            _check_utc("time", time)
        if self.seq < 0:
            raise ValueError(f"seq must be >= 0, got {self.seq}")
        if self.gateway is not None and self.edge not in GATEWAY_EDGES:
            raise ValueError(f"a gateway payload needs a gateway edge, not {self.edge}")
        if self.sdk is not None and self.edge != "sdk_edge":
            raise ValueError(f"an SDK payload needs edge sdk_edge, not {self.edge}")

    @property
    def event_type(self) -> str:
        return f"com.twilio.voice.insights.call-event.{_edge_family(self.edge)}"

    @property
    def identity(self) -> str:
        return f"event/{self.edge}/{self.seq}"


# ---------------------------------------------------------------------------------------------
# Call metrics (§3)
# ---------------------------------------------------------------------------------------------


class MetricStats(_Struct, frozen=True):
    """A measured quantity; interval records use ``value``, cumulative and summaries min/max/avg."""

    min: float | None = None
    max: float | None = None
    avg: float | None = None
    value: float | None = None


class Metrics(_Struct, frozen=True):
    """What was measured on one stream; anything not measured stays ``None`` and is not rendered."""

    codec: int | None = None
    codec_name: str | None = None
    packets_received: int | None = None
    packets_sent: int | None = None
    packets_lost: int | None = None
    packets_loss_percentage: float | None = None
    jitter: MetricStats | None = None
    rtt: MetricStats | None = None
    mos: MetricStats | None = None
    audio_in: MetricStats | None = None
    audio_out: MetricStats | None = None
    latency: MetricStats | None = None
    bytes_received: int | None = None
    bytes_sent: int | None = None
    # Delay-variation percentiles keyed "d50", "d70", "d90", ...
    packet_delay_variation: Mapping[str, int] | None = None

    def __post_init__(self) -> None:
        delays = self.packet_delay_variation
        if delays and not _PERCENTILE_KEYS.issuperset(delays):
            for key in delays:
                if _PDV_KEY.fullmatch(key) is None:
                    raise ValueError(f"packet_delay_variation key {key!r} is not of the form dNN")


class CallMetric(_Struct, frozen=True):
    """One ten-second (or shorter, final) metric record of one edge and direction.

    ``time`` is the end of the window, which Twilio renders as ``timestamp`` ("contain the metrics
    for the previous 10 seconds", §3.1); ``window_start`` makes the record's identity.
    """

    schema_id: ClassVar[str] = "VoiceInsights.CallMetric"

    account_sid: str
    call_sid: str
    time: datetime
    window_start: datetime
    edge: Edge
    direction: Direction
    codec: int | None = None
    codec_name: str | None = None
    interval: Metrics | None = None
    cumulative: Metrics | None = None
    gateway_metadata: GatewayMetadata | None = None
    client_metadata: ClientMetadata | None = None

    def __post_init__(self) -> None:
        _check_call(self.account_sid, self.call_sid)
        time, window_start = self.time, self.window_start
        # The usual case, both in the UTC singleton, settles without the calls.
        if (
            time is None
            or window_start is None
            or time.tzinfo is not UTC
            or window_start.tzinfo is not UTC
        ):
            _check_utc("time", time)
            _check_utc("window_start", window_start)
        if window_start > time:
            raise ValueError("window_start is after the end of the window (time)")
        if self.gateway_metadata is not None and self.edge not in GATEWAY_EDGES:
            raise ValueError(f"gateway metadata needs a gateway edge, not {self.edge}")
        if self.client_metadata is not None and self.edge != "sdk_edge":
            raise ValueError(f"client metadata needs edge sdk_edge, not {self.edge}")
        if self.edge == "unknown_edge" and self._has_measurements():
            raise ValueError("an unknown_edge metric has no edge object to hold measurements")

    def _has_measurements(self) -> bool:
        parts = (self.codec, self.codec_name, self.interval, self.cumulative)
        return any(part is not None for part in parts)

    @property
    def event_type(self) -> str:
        return f"com.twilio.voice.insights.call-metrics.{_edge_family(self.edge)}"

    @property
    def identity(self) -> str:
        return f"metric/{self.edge}/{self.direction}/{epoch_ms(self.window_start)}"


# ---------------------------------------------------------------------------------------------
# Call summaries (§4)
# ---------------------------------------------------------------------------------------------


class CallParty(_Struct, frozen=True):
    """``from`` / ``to`` of a summary."""

    caller: str | None = None
    callee: str | None = None
    carrier: str | None = None
    connection: str | None = None
    number_prefix: str | None = None
    location: Location | None = None
    city: str | None = None
    country_code: str | None = None
    country_subdivision: str | None = None
    ip_address: str | None = None
    sdk: TwilioSdk | None = None


class SdkSettings(_Struct, frozen=True):
    dscp: bool | None = None
    ice_restart_enabled: bool | None = None
    edge: str | None = None
    selected_edges: tuple[str, ...] = ()


class SummaryProperties(_Struct, frozen=True):
    """Edge-agnostic call properties: the v2 members first, then the ones only v1 renders."""

    direction: CallDirection | None = None
    disconnected_by: DisconnectedBy | None = None
    last_sip_response_num: int | None = None
    pdd_ms: int | None = None
    queue_time: int | None = None
    q850_cause: int | None = None
    route_id: str | None = None
    media_region: str | None = None
    signaling_region: str | None = None
    twilio_media_ip: str | None = None
    twilio_signaling_ip: str | None = None
    external_media_ip: str | None = None
    external_signaling_ip: str | None = None
    sip_call_id: str | None = None
    user_agent: str | None = None
    selected_region: str | None = None
    region: str | None = None
    trunk_sid: str | None = None
    settings: SdkSettings | None = None


class EdgeProperties(_Struct, frozen=True):
    """``properties`` of a gateway edge in a summary."""

    direction: Direction = "unknown"
    media_region: str | None = None
    signaling_region: str | None = None
    edge_location: str | None = None
    twilio_media_ip: str | None = None
    twilio_signaling_ip: str | None = None
    external_media_ip: str | None = None
    external_signaling_ip: str | None = None
    sip_call_id: str | None = None
    user_agent: str | None = None
    selected_region: str | None = None
    region: str | None = None
    disconnected_by: DisconnectedBy | None = None
    trunk_sid: str | None = None


class GatewayEdgeSummary(_Struct, frozen=True):
    properties: EdgeProperties | None = None
    inbound: Metrics | None = None
    outbound: Metrics | None = None


class SdkEdgeProperties(_Struct, frozen=True):
    direction: Direction = "unknown"
    disconnected_by: DisconnectedBy | None = None
    settings: SdkSettings | None = None


class SdkEventCounts(_Struct, frozen=True):
    """``sdk_edge.events``: occurrences by level, by group and by error code, plus user feedback."""

    levels: Mapping[Level, int] = {}
    groups: Mapping[str, int] = {}
    errors: Mapping[int, int] = {}
    feedback: FeedbackInfo | None = None

    def __post_init__(self) -> None:
        negative = [code for code in self.errors if code < 0]
        if negative:
            raise ValueError(f"error codes are non-negative, got {negative}")


class SdkEdgeSummary(_Struct, frozen=True):
    properties: SdkEdgeProperties | None = None
    inbound: Metrics | None = None
    outbound: Metrics | None = None
    events: SdkEventCounts | None = None


class VerifiedCaller(_Struct, frozen=True):
    verified: bool | None = None


class BrandedCall(_Struct, frozen=True):
    brand_sid: str | None = None
    branded: bool | None = None
    branded_channel_sid: str | None = None
    caller: str | None = None
    use_case: str | None = None


class Trust(_Struct, frozen=True):
    verified_caller: VerifiedCaller | None = None
    branded_call: BrandedCall | None = None


class SummaryAttributes(_Struct, frozen=True):
    conference_participant: bool | None = None


class CallSummary(_Struct, frozen=True, rename={"from_": "from"}):
    """One call summary as of ``processing_version``.

    ``kind`` picks the event type; ``processing_state`` is what the summary says about itself, and
    the two differ on purpose: Twilio's predicted-complete example carries
    ``processing_state: partial`` (§1.3). ``time`` is the moment the summary describes, chosen by
    the engine (the call's end in Twilio's example). ``answered_by`` is kept for the REST
    resource; no stream version carries it.
    """

    schema_id: ClassVar[str] = "VoiceInsights.CallSummary"

    account_sid: str
    call_sid: str
    time: datetime
    kind: SummaryKind
    processing_state: ProcessingState
    processing_version: int
    call_type: CallType
    call_state: CallState
    answered_by: AnsweredBy = "unknown"
    created_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration: int | None = None
    connect_duration: int | None = None
    from_: CallParty | None = None
    to: CallParty | None = None
    parent_call_sid: str | None = None
    parent_account_sid: str | None = None
    carrier_edge: GatewayEdgeSummary | None = None
    sip_edge: GatewayEdgeSummary | None = None
    client_edge: GatewayEdgeSummary | None = None
    sdk_edge: SdkEdgeSummary | None = None
    tags: tuple[CallTag, ...] = ()
    attributes: SummaryAttributes | None = None
    properties: SummaryProperties | None = None
    trust: Trust | None = None

    def __post_init__(self) -> None:
        _check_call(self.account_sid, self.call_sid)
        _check_sid("parent_call_sid", self.parent_call_sid, _CALL_SID)
        _check_sid("parent_account_sid", self.parent_account_sid, _ACCOUNT_SID)
        for name in ("time", "created_time", "start_time", "end_time"):
            _check_utc(name, getattr(self, name))
        if self.processing_version < 0:
            raise ValueError(f"processing_version must be >= 0, got {self.processing_version}")
        if len(set(self.tags)) != len(self.tags):
            raise ValueError(f"tags repeat a tag: {self.tags}")

    @property
    def event_type(self) -> str:
        return f"com.twilio.voice.insights.call-summary.{self.kind}"

    @property
    def identity(self) -> str:
        return f"summary/{self.kind}/{self.processing_version}"


# ---------------------------------------------------------------------------------------------
# Sink test event (event-streams-api.md §1.1 "Sink Test")
# ---------------------------------------------------------------------------------------------


class TestEvent(_Struct, frozen=True):
    """The event a Sink Test sends through one sink; ``test_id`` is a lowercase UUID string."""

    # Not a pytest test class, despite the name Twilio's API gives it.
    __test__: ClassVar[bool] = False
    schema_id: ClassVar[str] = "EventStreams.TestSink"

    account_sid: str
    sink_sid: str
    test_id: str
    time: datetime

    def __post_init__(self) -> None:
        _check_sid("account_sid", self.account_sid, _ACCOUNT_SID)
        _check_sid("sink_sid", self.sink_sid, _SINK_SID)
        _check_utc("time", self.time)
        if str(_parse_uuid(self.test_id)) != self.test_id:
            raise ValueError(f"test_id {self.test_id!r} is not a lowercase hyphenated UUID")

    @property
    def call_sid(self) -> None:
        return None

    @property
    def event_type(self) -> str:
        return "com.twilio.eventstreams.test-event"

    @property
    def identity(self) -> str:
        return f"test/{self.test_id}"


def _parse_uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ValueError(f"test_id {value!r} is not a UUID") from None


def _edge_family(edge: Edge) -> Literal["sdk", "gateway"]:
    # unknown_edge goes with gateway: only an SDK report can name sdk_edge (docs/event-schemas.md).
    return "sdk" if edge == "sdk_edge" else "gateway"


InsightEvent: TypeAlias = CallEvent | CallMetric | CallSummary | TestEvent

EDGES: Final[tuple[Edge, ...]] = get_args(Edge)
LEVELS: Final[tuple[Level, ...]] = get_args(Level)
