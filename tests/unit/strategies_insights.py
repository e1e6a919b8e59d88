"""Hypothesis strategies for canonical insight events, and the validator their renderings must pass.

Every strategy produces events that the canonical model accepts (aware UTC times, well-formed SIDs,
payloads only on the edge that may carry them), and otherwise explores freely: any member may be
unknown, strings are arbitrary Unicode, numbers span their whole type. Other tests (ingest, engine,
envelope, sinks) can ``from tests.unit.strategies_insights import insight_events`` (or a per-type
strategy) and check renderings with ``errors(schema_id, version, data)``.
"""

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, TypeVar

from hypothesis import strategies as st
from jsonschema import Draft7Validator, FormatChecker, ValidationError

from callstream.model import insights as m
from callstream.schemas import load_schema

T = TypeVar("T")

__all__ = [
    "account_sids",
    "call_events",
    "call_metrics",
    "call_sids",
    "call_summaries",
    "errors",
    "insight_events",
    "leaf_errors",
    "metrics",
    "sink_test_events",
    "utc_datetimes",
    "validator",
]

# ---------------------------------------------------------------------------------------------
# Scalars
# ---------------------------------------------------------------------------------------------

_HEX = "0123456789abcdefABCDEF"


def _sids(prefix: str) -> st.SearchStrategy[str]:
    return st.text(_HEX, min_size=32, max_size=32).map(lambda digits: prefix + digits)


def account_sids() -> st.SearchStrategy[str]:
    return _sids("AC")


def call_sids() -> st.SearchStrategy[str]:
    return _sids("CA")


def utc_datetimes() -> st.SearchStrategy[datetime]:
    return st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2099, 12, 31),
        timezones=st.just(UTC),
    )


def _opt(strategy: st.SearchStrategy[T]) -> st.SearchStrategy[T | None]:
    return st.none() | strategy


_text = st.text(max_size=12)
_opt_text = _opt(_text)
_floats = st.floats(allow_nan=False, allow_infinity=False)
_ints = st.integers(min_value=-(2**53), max_value=2**53)
_counts = st.integers(min_value=0, max_value=2**40)
_opt_int = _opt(_ints)
_opt_count = _opt(_counts)
_opt_bool = _opt(st.booleans())

# ---------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------

_locations = st.builds(m.Location, lat=_floats, lon=_floats)
_browsers = st.builds(m.Browser, name=_opt_text, major=_opt_text, version=_opt_text)
_oses = st.builds(m.OperatingSystem, name=_opt_text, version=_opt_text)
_devices = st.builds(m.Device, model=_opt_text, type=_opt_text, vendor=_opt_text, arch=_opt_text)
_engines = st.builds(m.Engine, name=_opt_text, version=_opt_text)
_apps = st.builds(m.AppInfo, name=_opt_text, version=_opt_text)
_sdks = st.builds(
    m.TwilioSdk,
    type=_opt_text,
    version=_opt_text,
    platform=_opt_text,
    region=_opt_text,
    selected_region=_opt_text,
    edge_location=_opt_text,
    browser=_opt(_browsers),
    os=_opt(_oses),
    device=_opt(_devices),
    engine=_opt(_engines),
    app=_opt(_apps),
)
_client_metadata = st.builds(
    m.ClientMetadata,
    client_name=_opt_text,
    city=_opt_text,
    country_code=_opt_text,
    country_subdivision=_opt_text,
    ip_address=_opt_text,
    location=_opt(_locations),
    sdk=_opt(_sdks),
)
_gateway_metadata = st.builds(
    m.GatewayMetadata,
    region=_opt_text,
    twilio_ip=_opt_text,
    external_ip=_opt_text,
    edge_location=_opt_text,
)
_feedback = st.builds(m.FeedbackInfo, score=_opt_int, reason=_opt_text)

# ---------------------------------------------------------------------------------------------
# Call events
# ---------------------------------------------------------------------------------------------

_sdk_event_data = st.builds(
    m.SdkEventData,
    error=_opt(st.builds(m.ErrorInfo, code=_opt_int, message=_opt_text)),
    feedback=_opt(_feedback),
    metric=_opt(
        st.builds(
            m.MetricData,
            threshold=_opt(_floats),
            values=st.lists(_floats, max_size=5).map(tuple),
        )
    ),
    ice_candidate_pair=_opt(
        st.builds(
            m.IceCandidatePair,
            local=_opt(st.builds(m.IceCandidate, type=_opt_text, protocol=_opt_text)),
            remote=_opt(st.builds(m.IceCandidate, type=_opt_text, protocol=_opt_text)),
        )
    ),
    metadata=_opt(_client_metadata),
)
_languages = st.builds(
    m.LanguageSettings,
    tts_provider=_opt_text,
    voice=_opt_text,
    transcription_provider=_opt_text,
    speech_model=_opt_text,
)
_relay = st.builds(
    m.ConversationRelayData,
    session_id=_opt_text,
    name=_opt_text,
    sequence_number=_opt_int,
    tts_latency=_opt(st.builds(m.LatencyEvent, latency_ms=_opt_int)),
    stt_latency=_opt(st.builds(m.LatencyEvent, latency_ms=_opt_int)),
    interrupt=_opt(st.builds(m.InterruptEvent, type=st.sampled_from(["DTMF", "SPEECH"]))),
    last_token_received=_opt(
        st.builds(m.LastTokenReceived, total_tokens=_opt_int, total_words=_opt_int)
    ),
    configurations=_opt(
        st.builds(
            m.RelayConfiguration,
            configurations=st.dictionaries(_text, _text, max_size=4),
            languages=st.dictionaries(_text, _languages, max_size=3),
        )
    ),
    language_changed=_opt(
        st.builds(
            m.LanguageChanged, tts_language_code=_opt_text, transcription_language_code=_opt_text
        )
    ),
    call_wrap_up=_opt(
        st.builds(
            m.CallWrapUp,
            duration_in_seconds=_opt_int,
            end_status=st.sampled_from(["unknown", "failure", "ended", "hung_up"]),
        )
    ),
    error=_opt(st.builds(m.ConversationRelayError, error_code=_opt_int, message=_opt_text)),
)


@st.composite
def call_events(draw: st.DrawFn, edge: m.Edge | None = None) -> m.CallEvent:
    """Call events on any edge (or on ``edge``), each carrying only its own edge's payload."""
    chosen: m.Edge = draw(st.sampled_from(m.EDGES)) if edge is None else edge
    gateway = st.builds(m.GatewayEventData, metadata=_opt(_gateway_metadata))
    return m.CallEvent(
        account_sid=draw(account_sids()),
        call_sid=draw(call_sids()),
        time=draw(utc_datetimes()),
        seq=draw(_counts),
        edge=chosen,
        group=draw(_text),
        name=draw(_text),
        level=draw(st.sampled_from(m.LEVELS)),
        gateway=draw(_opt(gateway)) if chosen in m.GATEWAY_EDGES else None,
        sdk=draw(_opt(_sdk_event_data)) if chosen == "sdk_edge" else None,
        conversation_relay=draw(_opt(_relay)),
    )


# ---------------------------------------------------------------------------------------------
# Call metrics
# ---------------------------------------------------------------------------------------------

_stats = st.builds(
    m.MetricStats, min=_opt(_floats), max=_opt(_floats), avg=_opt(_floats), value=_opt(_floats)
)
_pdv_keys = st.integers(min_value=0, max_value=100).map(lambda n: f"d{n}")


def metrics() -> st.SearchStrategy[m.Metrics]:
    return st.builds(
        m.Metrics,
        codec=_opt(st.integers(min_value=0, max_value=127)),
        codec_name=_opt_text,
        packets_received=_opt_count,
        packets_sent=_opt_count,
        packets_lost=_opt_count,
        packets_loss_percentage=_opt(_floats),
        jitter=_opt(_stats),
        rtt=_opt(_stats),
        mos=_opt(_stats),
        audio_in=_opt(_stats),
        audio_out=_opt(_stats),
        latency=_opt(_stats),
        bytes_received=_opt_count,
        bytes_sent=_opt_count,
        packet_delay_variation=_opt(st.dictionaries(_pdv_keys, _ints, max_size=4)),
    )


@st.composite
def call_metrics(draw: st.DrawFn, edge: m.Edge | None = None) -> m.CallMetric:
    """Metric records whose window ends 0-10 s after it starts, with edge-consistent payloads."""
    chosen: m.Edge = draw(st.sampled_from(m.EDGES)) if edge is None else edge
    start = draw(utc_datetimes())
    measured = chosen != "unknown_edge"
    return m.CallMetric(
        account_sid=draw(account_sids()),
        call_sid=draw(call_sids()),
        window_start=start,
        time=start + draw(st.timedeltas(timedelta(0), timedelta(seconds=10))),
        edge=chosen,
        direction=draw(st.sampled_from(["unknown", "inbound", "outbound", "both"])),
        codec=draw(_opt(st.integers(min_value=0, max_value=127))) if measured else None,
        codec_name=draw(_opt_text) if measured else None,
        interval=draw(_opt(metrics())) if measured else None,
        cumulative=draw(_opt(metrics())) if measured else None,
        gateway_metadata=draw(_opt(_gateway_metadata)) if chosen in m.GATEWAY_EDGES else None,
        client_metadata=draw(_opt(_client_metadata)) if chosen == "sdk_edge" else None,
    )


# ---------------------------------------------------------------------------------------------
# Call summaries
# ---------------------------------------------------------------------------------------------

_disconnected_by = _opt(st.sampled_from(["caller", "callee", "local", "remote"]))
_directions = st.sampled_from(["unknown", "inbound", "outbound", "both"])
_settings = st.builds(
    m.SdkSettings,
    dscp=_opt_bool,
    ice_restart_enabled=_opt_bool,
    edge=_opt_text,
    selected_edges=st.lists(_text, max_size=3).map(tuple),
)
_parties = st.builds(
    m.CallParty,
    caller=_opt_text,
    callee=_opt_text,
    carrier=_opt_text,
    connection=_opt_text,
    number_prefix=_opt_text,
    location=_opt(_locations),
    city=_opt_text,
    country_code=_opt_text,
    country_subdivision=_opt_text,
    ip_address=_opt_text,
    sdk=_opt(_sdks),
)
_summary_properties = st.builds(
    m.SummaryProperties,
    direction=_opt(
        st.sampled_from(
            [
                "inbound",
                "outbound_api",
                "outbound_dial",
                "trunking_originating",
                "trunking_terminating",
            ]
        )
    ),
    disconnected_by=_disconnected_by,
    last_sip_response_num=_opt_int,
    pdd_ms=_opt_int,
    queue_time=_opt_int,
    q850_cause=_opt_int,
    route_id=_opt_text,
    media_region=_opt_text,
    signaling_region=_opt_text,
    twilio_media_ip=_opt_text,
    twilio_signaling_ip=_opt_text,
    external_media_ip=_opt_text,
    external_signaling_ip=_opt_text,
    sip_call_id=_opt_text,
    user_agent=_opt_text,
    selected_region=_opt_text,
    region=_opt_text,
    trunk_sid=_opt_text,
    settings=_opt(_settings),
)
_edge_properties = st.builds(
    m.EdgeProperties,
    direction=_directions,
    media_region=_opt_text,
    signaling_region=_opt_text,
    edge_location=_opt_text,
    twilio_media_ip=_opt_text,
    twilio_signaling_ip=_opt_text,
    external_media_ip=_opt_text,
    external_signaling_ip=_opt_text,
    sip_call_id=_opt_text,
    user_agent=_opt_text,
    selected_region=_opt_text,
    region=_opt_text,
    disconnected_by=_disconnected_by,
    trunk_sid=_opt_text,
)
_gateway_summaries = st.builds(
    m.GatewayEdgeSummary,
    properties=_opt(_edge_properties),
    inbound=_opt(metrics()),
    outbound=_opt(metrics()),
)
_sdk_summaries = st.builds(
    m.SdkEdgeSummary,
    properties=_opt(
        st.builds(
            m.SdkEdgeProperties,
            direction=_directions,
            disconnected_by=_disconnected_by,
            settings=_opt(_settings),
        )
    ),
    inbound=_opt(metrics()),
    outbound=_opt(metrics()),
    events=_opt(
        st.builds(
            m.SdkEventCounts,
            levels=st.dictionaries(st.sampled_from(m.LEVELS), _counts, max_size=5),
            groups=st.dictionaries(_text, _counts, max_size=4),
            errors=st.dictionaries(st.integers(min_value=0, max_value=99999), _counts, max_size=3),
            feedback=_opt(_feedback),
        )
    ),
)
_trust = st.builds(
    m.Trust,
    verified_caller=_opt(st.builds(m.VerifiedCaller, verified=_opt_bool)),
    branded_call=_opt(
        st.builds(
            m.BrandedCall,
            brand_sid=_opt_text,
            branded=_opt_bool,
            branded_channel_sid=_opt_text,
            caller=_opt_text,
            use_case=_opt_text,
        )
    ),
)
_tags = st.lists(
    st.sampled_from(
        [
            "silence",
            "high_jitter",
            "high_packet_loss",
            "high_pdd",
            "high_latency",
            "low_mos",
            "ice_failure",
        ]
    ),
    unique=True,
).map(tuple)


def call_summaries() -> st.SearchStrategy[m.CallSummary]:
    return st.builds(
        m.CallSummary,
        account_sid=account_sids(),
        call_sid=call_sids(),
        time=utc_datetimes(),
        kind=st.sampled_from(["partial", "predicted-complete", "complete"]),
        processing_state=st.sampled_from(["complete", "partial"]),
        processing_version=_counts,
        call_type=st.sampled_from(["carrier", "sip", "trunking", "client", "whatsapp"]),
        call_state=st.sampled_from(
            ["ringing", "completed", "busy", "fail", "noanswer", "canceled", "answered", "undialed"]
        ),
        answered_by=st.sampled_from(
            [
                "unknown",
                "machine_start",
                "machine_end_beep",
                "machine_end_silence",
                "machine_end_other",
                "human",
                "fax",
            ]
        ),
        created_time=_opt(utc_datetimes()),
        start_time=_opt(utc_datetimes()),
        end_time=_opt(utc_datetimes()),
        duration=_opt_int,
        connect_duration=_opt_int,
        from_=_opt(_parties),
        to=_opt(_parties),
        parent_call_sid=_opt(call_sids()),
        parent_account_sid=_opt(account_sids()),
        carrier_edge=_opt(_gateway_summaries),
        sip_edge=_opt(_gateway_summaries),
        client_edge=_opt(_gateway_summaries),
        sdk_edge=_opt(_sdk_summaries),
        tags=_tags,
        attributes=_opt(st.builds(m.SummaryAttributes, conference_participant=_opt_bool)),
        properties=_opt(_summary_properties),
        trust=_opt(_trust),
    )


# ---------------------------------------------------------------------------------------------
# Sink test events and the union
# ---------------------------------------------------------------------------------------------


def sink_test_events() -> st.SearchStrategy[m.TestEvent]:
    return st.builds(
        m.TestEvent,
        account_sid=account_sids(),
        sink_sid=_sids("DG"),
        test_id=st.uuids().map(str),
        time=utc_datetimes(),
    )


def insight_events() -> st.SearchStrategy[m.InsightEvent]:
    return st.one_of(call_events(), call_metrics(), call_summaries(), sink_test_events())


# ---------------------------------------------------------------------------------------------
# Checking
# ---------------------------------------------------------------------------------------------

# RFC 3339 date-time (JSON Schema's "date-time"). jsonschema only checks that format when an
# optional package is installed; registering our own makes the check unconditional.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")


def _is_date_time(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    if _RFC3339.fullmatch(instance) is None:
        return False
    try:
        datetime.fromisoformat(instance)
    except ValueError:
        return False
    return True


def _format_checker() -> FormatChecker:
    checker = FormatChecker(formats=())
    checker.checks("date-time")(_is_date_time)
    return checker


@cache
def validator(schema_id: str, version: int) -> Draft7Validator:
    """A draft-07 validator for a packaged schema, with date-time format checks switched on."""
    return Draft7Validator(load_schema(schema_id, version), format_checker=_format_checker())


def errors(schema_id: str, version: int, instance: Any) -> list[str]:
    """Readable validation errors ("path: message"), empty when ``instance`` is valid."""
    found = leaf_errors(validator(schema_id, version), instance)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in found]


def leaf_errors(checker: Draft7Validator, instance: Any) -> list[ValidationError]:
    """The errors worth reading.

    A nullable member is ``oneOf: [null, object]``; when its object is wrong, the useful errors
    are the ones inside the object branch, not "is not valid under any of the given schemas".
    """
    return [leaf for error in checker.iter_errors(instance) for leaf in _leaves(error)]


def _leaves(error: ValidationError) -> Iterator[ValidationError]:
    if not error.context:
        yield error
        return
    for sub in error.context:
        if sub.validator == "type" and sub.validator_value == "null":
            continue
        yield from _leaves(sub)
